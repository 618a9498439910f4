"""The few collective operations training needs beyond what Lightning's DDP does.

Methods that call ``backward`` once per configuration (SAN, MutualNet, US-Net, S-Net) cannot use
DDP's gradient reducer: it expects every parameter in the graph of one backward, but a private BN
set takes part only in its own configuration's graph. Those steps run every backward without
synchronisation and then average all gradients here, once per optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

BUCKET_ELEMENTS = 1 << 24  # 64 MB of float32 per all-reduce


def world_size() -> int:
    """Processes in the default group (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 outside a process group)."""
    return dist.get_rank() if world_size() > 1 else 0


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """``tensor`` summed over all processes (in place; returned for chaining)."""
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


@torch.no_grad()
def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every existing ``.grad`` by its mean over the processes (flattened in buckets per
    dtype; every process must hold gradients for the same parameters, as our methods guarantee:
    each process trains the same configurations in a step)."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for group in by_dtype.values():
        bucket: list[Tensor] = []
        size = 0
        for g in group + [None]:
            if g is not None and (not bucket or size + g.numel() <= BUCKET_ELEMENTS):
                bucket.append(g)
                size += g.numel()
                continue
            if bucket:
                flat = torch.cat([b.reshape(-1) for b in bucket])
                dist.all_reduce(flat)
                flat.div_(n)
                for b, part in zip(bucket, flat.split([b.numel() for b in bucket])):
                    b.copy_(part.view_as(b))
            bucket, size = ([g], g.numel()) if g is not None else ([], 0)
