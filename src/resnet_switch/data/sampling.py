"""Reproducible, resumable sampling: the order and the augmentation of every sample are pure
functions of ``(seed, epoch, index)``.

The sampler yields keys ``epoch * n + index``; the dataset wrapper splits a key back and seeds the
worker's transform RNG from it. So a resumed run (new workers, new loader) draws exactly the crops
and flips an uninterrupted run would have drawn, whatever ``num_workers`` is.

Under DDP each process takes every ``world_size``-th key of the epoch's permutation (rank ``r``
takes positions ``r, r + W, ...``), so ``W`` processes with batch ``b`` each see exactly the samples
one process with batch ``W * b`` sees at the same step. :class:`ResumableLoader` counts the batches
it has handed out in the current epoch; Lightning stores that in every checkpoint and a mid-epoch
resume skips them (no sample is seen twice or missed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation (distinct for every (seed, epoch, index))."""
    return (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + index * 0xC2B2AE3D) % (2**63 - 1)


class EpochShuffleSampler(Sampler[int]):
    """Shuffles ``n`` indices with a permutation drawn from ``(seed, epoch)``; yields this rank's share.

    Lightning calls :meth:`set_epoch` before every epoch (also after a resume). Yields
    ``epoch * n + index`` keys (see module docstring); ``shuffle=False`` keeps index order.
    With ``num_replicas`` > 1 the permutation is cut to a multiple of ``num_replicas`` (every rank
    gets ``n // num_replicas`` keys, so ranks never disagree on the number of batches).
    ``start``: keys of this epoch's share to skip (set by :class:`ResumableLoader`).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.n, self.seed, self.shuffle = int(n), int(seed), shuffle
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.num_replicas if self.num_replicas > 1 else self.n

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.num_replicas > 1:
            order = order[: len(self) * self.num_replicas][self.rank :: self.num_replicas]
        offset = self.epoch * self.n
        return iter([offset + i for i in order[self.start :]])


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...`` of ``n`` in order (evaluation under DDP: every sample is seen
    by exactly one process, no padding, so synchronised metrics are exact)."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0):
        self.n, self.num_replicas, self.rank = int(n), int(num_replicas), int(rank)

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.num_replicas))


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` over an :class:`EpochShuffleSampler` that can resume mid-epoch.

    ``state_dict()`` is ``{"epoch", "batches"}``: the batches of that epoch handed out so far
    (Lightning saves it with the fit loop in every checkpoint). After ``load_state_dict``, the next
    iteration of the same epoch skips those batches in the sampler (nothing is loaded for them);
    an iteration of any other epoch starts at its beginning. ``len()`` stays the full epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochShuffleSampler) or self.batch_size is None:
            raise TypeError("ResumableLoader needs sampler=EpochShuffleSampler(...) and a batch_size")
        self._served = 0
        self._resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self):
        return self._epoch_batches()

    def _epoch_batches(self):
        """A generator, so it starts at the first ``next()``: after Lightning's ``set_epoch`` (the
        iterator is created before it), also with worker processes that prefetch indices at once."""
        skip = 0
        if self._resume is not None:
            epoch, batches = self._resume
            self._resume = None
            skip = batches if epoch == self.sampler.epoch else 0
        self.sampler.start = skip * self.batch_size
        self._served = skip
        for batch in super().__iter__():
            self._served += 1
            yield batch
