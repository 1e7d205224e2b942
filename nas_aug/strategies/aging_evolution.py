"""Regularized (aging) evolution (Real et al. 2019), as a searcher."""

from __future__ import annotations

from collections.abc import Callable

from ..space.choice import Sample, Space
from ..validation import check_int
from .searcher import SEARCHERS, Searcher


@SEARCHERS.register("aging_evolution")
class AgingEvolution(Searcher):
    """Regularized evolution: a random population of ``population_size``; then, one child at
    a time, a tournament of ``sample_size`` random members picks the best as parent, the
    child is the parent with one label redrawn, and the oldest member dies. The population is
    always the last ``population_size`` samples told, so the saved state is the history.
    When the tournaments keep picking parents whose every neighbour was seen, the child is a
    random new sample instead. It ends after ``num_samples`` evaluations, or when no new
    feasible sample can be made.

    Args:
        space: the space to search; ``None`` until :meth:`bind` (``OneShotNAS`` binds it).
        num_samples: how many samples to evaluate (at least ``population_size``).
        population_size: members alive at once (at least 2).
        sample_size: tournament size (2 to ``population_size``).
        constraint, canonical, seed, max_tries: as for every
            :class:`~nas_aug.strategies.searcher.Searcher`.

    >>> from nas_aug.space.choice import Space, ValueChoice
    >>> space = Space([ValueChoice(label, [1, 2, 3, 4]) for label in "abc"])
    >>> search = AgingEvolution(space, num_samples=40, population_size=8, sample_size=3,
    ...                         constraint=lambda s: sum(s.values()) <= 6)
    >>> search.run(lambda s: s["a"] * s["b"] * s["c"], progress=False)
    ({'a': 2, 'b': 2, 'c': 2}, 8.0)
    """

    name = "aging_evolution"

    def __init__(self, space: Space | None = None, num_samples: int = 128,
                 population_size: int = 16, sample_size: int = 4,
                 constraint: Callable[[Sample], bool] | None = None, seed: int | None = None,
                 max_tries: int = 1000, canonical: Callable[[Sample], Sample] | None = None):
        self.population_size = check_int("population_size", population_size, 2)
        self.sample_size = check_int("sample_size", sample_size, 2, population_size)
        self.num_samples = check_int("num_samples", num_samples, population_size)
        super().__init__(space, constraint=constraint, canonical=canonical, seed=seed,
                         max_tries=max_tries)

    @property
    def total(self) -> int:
        return self.num_samples

    def _exhausted(self) -> bool:
        return len(self.history) + len(self._pending) + len(self._queue) >= self.num_samples

    def _propose(self, seen: set[str]) -> list[Sample]:
        if self._rounds == 0:
            children = self._breed(self.population_size, lambda: self.space.random(self._rng),
                                   seen)
            if len(children) < self.population_size:
                raise self._too_few(len(children), "population_size", self.population_size)
            return children
        population = self.history[-self.population_size:]  # the oldest dies as a child is born
        for _ in range(self.population_size):  # a parent without a new neighbour: a new tournament
            parent = max(self._rng.sample(population, self.sample_size), key=lambda pair: pair[1])
            neighbours = self.space.neighbours(parent[0])
            child = self._breed(1, lambda pool=neighbours: self._rng.choice(pool), seen)
            if child:
                return child
        return self._breed(1, lambda: self.space.random(self._rng), seen)  # a random newcomer
