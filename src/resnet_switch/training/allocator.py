"""Keep freed memory in the process on glibc (Linux CPU runs).

By default glibc returns the top of its heap to the OS once more than 128 KB (adaptively, a few MB)
is free there, and serves blocks above the mmap threshold with fresh mappings. A training step that
allocates and frees tens of MB of kernels and gradients per configuration then pays a minor page
fault per 4 KB page, every step (SAN's generated kernels: ~90k faults per step). Raising both
thresholds keeps that memory mapped, as jemalloc/tcmalloc would. No-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds for this process; ``True`` if applied. Skipped when
    the user set ``MALLOC_TRIM_THRESHOLD_``/``MALLOC_MMAP_THRESHOLD_`` (their choice wins)."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
