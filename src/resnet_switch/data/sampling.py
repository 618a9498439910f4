"""Reproducible, resumable sampling: the order and the augmentation of every sample are pure
functions of ``(seed, epoch, index)``.

The sampler yields keys ``epoch * n + index``; the dataset wrapper splits a key back and seeds the
worker's transform RNG from it. So a resumed run (new workers, new loader) draws exactly the crops
and flips an uninterrupted run would have drawn, whatever ``num_workers`` is.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation (distinct for every (seed, epoch, index))."""
    return (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + index * 0xC2B2AE3D) % (2**63 - 1)


class EpochShuffleSampler(Sampler[int]):
    """Shuffles ``n`` indices with a permutation drawn from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch (also after a resume). Yields
    ``epoch * n + index`` keys (see module docstring); ``shuffle=False`` keeps index order.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle = int(n), int(seed), shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        offset = self.epoch * self.n
        return iter([offset + i for i in order])
