"""The process's random number generator states as plain tensors and ints (checkpoint-safe:
``torch.load(weights_only=True)`` reads them), and their restoration.

Training draws its augmentations from per-sample seeds and MutualNet's configurations from its own
generator (both resumable without this); these states cover everything else that may draw from
the global generators (torch CPU/CUDA, Python ``random``, NumPy).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_states() -> dict[str, Any]:
    """``{"torch", "cuda", "python", "numpy"}`` of this process."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (from :func:`capture_rng_states`); CUDA states are restored
    for as many devices as both the states and this machine have."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for device, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
    py = states["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
