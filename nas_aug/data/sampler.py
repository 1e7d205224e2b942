"""A shuffling sampler whose order depends only on ``(seed, epoch)``."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[int]):
    """A random permutation of ``range(num_samples)``, drawn from ``seed + epoch``.

    The order never touches the global RNG, so a fit resumed from a checkpoint sees exactly the
    batch order of an uninterrupted fit. Lightning calls :meth:`set_epoch` at the start of every
    epoch on any sampler that has it.

    >>> sampler = EpochSeededSampler(10, seed=3)
    >>> first = list(sampler)
    >>> sorted(first) == list(range(10))
    True
    >>> first == list(EpochSeededSampler(10, seed=3))
    True
    >>> sampler.set_epoch(1)
    >>> list(sampler) == first
    False
    """

    def __init__(self, num_samples: int, seed: int = 0):
        if num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation for ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples
