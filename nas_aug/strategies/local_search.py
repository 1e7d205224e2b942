"""Local search with restarts (as White et al. 2021 run it on NAS benchmarks), as a searcher."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..space.choice import Sample, Space, sample_key
from ..validation import check_int
from .searcher import SEARCHERS, Searcher


@SEARCHERS.register("local_search")
class LocalSearch(Searcher):
    """First-improvement hill climbing over one-label neighbours, with random restarts.

    It starts from a random feasible sample, evaluates its untried feasible neighbours (one
    label changed) in random order and moves to the first that scores higher; at a local
    optimum (no neighbour left that improves) it restarts from a new random sample. It ends
    after ``num_samples`` evaluations, or when no new feasible sample can be made.

    Args:
        space: the space to search; ``None`` until :meth:`bind` (``OneShotNAS`` binds it).
        num_samples: how many samples to evaluate (at least 1).
        constraint, canonical, seed, max_tries: as for every
            :class:`~nas_aug.strategies.searcher.Searcher`.

    >>> from nas_aug.space.choice import Space, ValueChoice
    >>> space = Space([ValueChoice(label, [1, 2, 3, 4]) for label in "abc"])
    >>> search = LocalSearch(space, num_samples=30, constraint=lambda s: sum(s.values()) <= 6)
    >>> search.run(lambda s: s["a"] * s["b"] * s["c"], progress=False)
    ({'a': 2, 'b': 2, 'c': 2}, 8.0)
    """

    name = "local_search"

    def __init__(self, space: Space | None = None, num_samples: int = 128,
                 constraint: Callable[[Sample], bool] | None = None, seed: int | None = None,
                 max_tries: int = 1000, canonical: Callable[[Sample], Sample] | None = None):
        self.num_samples = check_int("num_samples", num_samples, 1)
        super().__init__(space, constraint=constraint, canonical=canonical, seed=seed,
                         max_tries=max_tries)

    def _start(self, space: Space, constraint, canonical, seed: int) -> None:
        super()._start(space, constraint, canonical, seed)
        self._incumbent: tuple[Sample, float] | None = None  # the climb's current sample

    @property
    def total(self) -> int:
        return self.num_samples

    def _exhausted(self) -> bool:
        return len(self.history) + len(self._pending) + len(self._queue) >= self.num_samples

    def _propose(self, seen: set[str]) -> list[Sample]:
        if self.history and (self._incumbent is None or self.history[-1][1] > self._incumbent[1]):
            self._incumbent = self.history[-1]  # a first sample, a restart, or an improvement
        if self._incumbent is not None:
            untried = [n for n in map(self._representative, self.space.neighbours(
                self._incumbent[0])) if sample_key(n) not in seen
                and (self.constraint is None or self.constraint(dict(n)))]
            if untried:
                neighbour = self._rng.choice(untried)
                seen.add(sample_key(neighbour))
                return [neighbour]
            self._incumbent = None  # a local optimum: restart
        start = self._breed(1, lambda: self.space.random(self._rng), seen)
        if self._rounds == 0 and not start:
            raise self._too_few(0, "num_samples", 1)
        return start

    def _representative(self, sample: Sample) -> Sample:
        return sample if self.canonical is None else self.canonical(sample)

    def state_dict(self) -> dict[str, Any]:
        incumbent = None if self._incumbent is None else \
            [self._encode(self._incumbent[0]), self._incumbent[1]]
        return {**super().state_dict(), "incumbent": incumbent}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        incumbent = state.get("incumbent")
        self._incumbent = None if incumbent is None else \
            (self._decode(incumbent[0]), float(incumbent[1]))
