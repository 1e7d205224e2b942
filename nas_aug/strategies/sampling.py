"""Path sampling for one-shot supernet training: which sub-networks a training step trains."""

from __future__ import annotations

import random

from ..space import Sample, Space
from ..validation import check_int


class UniformSampling:
    """One uniformly random path per step (single-path one-shot, SPOS). ``num_random`` is
    accepted for a common constructor and must be 1.

    >>> from nas_aug.space import ValueChoice
    >>> len(UniformSampling().paths(Space([ValueChoice("k", [3, 5])]), random.Random(0)))
    1
    """

    def __init__(self, num_random: int = 1):
        if num_random != 1:
            raise ValueError(f"uniform sampling trains one random path per step; "
                             f"num_random={num_random!r} needs sampling='sandwich'")

    def paths(self, space: Space, rng: random.Random) -> list[Sample]:
        return [space.random(rng)]


class SandwichSampling:
    """The sandwich rule (BigNAS / slimmable networks): the largest, the smallest and
    ``num_random`` random paths, their gradients summed in one step.

    >>> from nas_aug.space import ValueChoice
    >>> paths = SandwichSampling(2).paths(Space([ValueChoice("k", [3, 5])]), random.Random(0))
    >>> [p["k"] for p in paths[:2]], len(paths)
    ([5, 3], 4)
    """

    def __init__(self, num_random: int = 1):
        self.num_random = check_int("num_random", num_random, 0)

    def paths(self, space: Space, rng: random.Random) -> list[Sample]:
        return [space.largest(), space.smallest()] + [space.random(rng)
                                                      for _ in range(self.num_random)]


SAMPLINGS = {"uniform": UniformSampling, "sandwich": SandwichSampling}
