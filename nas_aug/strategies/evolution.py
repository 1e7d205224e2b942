"""Evolutionary search over the samples of a space (SPOS, Guo et al. 2020), as a searcher."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ..space.choice import Sample, Space
from ..validation import check_int
from .searcher import SEARCHERS, Searcher


@SEARCHERS.register("evolution")
class Evolution(Searcher):
    """Evolutionary search: a random population, then mutation and crossover of the best samples.

    Generation 0 is ``population_size`` distinct feasible random samples. Each later generation
    takes the ``parents`` best samples evaluated so far and makes half its children by mutation
    (each label redrawn with ``mutation_prob``) and half by crossover; random samples fill any
    shortfall. The search ends after ``generations``, or early when a generation gets no new
    child. See :class:`~nas_aug.strategies.searcher.Searcher` for ask/tell, ``constraint``,
    ``canonical`` and the saved state.

    Args:
        space: the space to search; ``None`` until :meth:`bind` (``OneShotNAS`` binds it).
        population_size: samples per generation (at least 2).
        generations: number of generations (at least 1).
        parents: how many of the best samples breed (default: half the population, >= 2).
        mutation_prob: the probability that a mutation redraws each label.
        constraint: admits a sample (e.g. a budget); ``None`` admits all.
        canonical: maps a sample to its architecture's representative.
        seed: the search's seed (default: the one :meth:`bind` gets, else 0).
        max_tries: failed draws in a row after which a batch stays short.

    Raises:
        ValueError: a setting out of range; from ``ask()``, a first generation that cannot
            be filled with distinct feasible samples.
        TypeError: ``space`` is not a :class:`~nas_aug.space.Space` or ``constraint`` not
            callable.

    >>> from nas_aug.space.choice import Space, ValueChoice
    >>> space = Space([ValueChoice(label, [1, 2, 3, 4]) for label in "abc"])
    >>> search = Evolution(space, population_size=6, generations=4,
    ...                    constraint=lambda s: sum(s.values()) <= 6)
    >>> search.run(lambda s: s["a"] * s["b"] * s["c"], progress=False)
    ({'a': 2, 'b': 2, 'c': 2}, 8.0)
    >>> search.done, len(search.history) <= 6 * 4
    (True, True)
    """

    name = "evolution"

    def __init__(self, space: Space | None = None, population_size: int = 16,
                 generations: int = 8, parents: int | None = None, mutation_prob: float = 0.1,
                 constraint: Callable[[Sample], bool] | None = None, seed: int | None = None,
                 max_tries: int = 1000, canonical: Callable[[Sample], Sample] | None = None):
        check_int("population_size", population_size, 2)
        check_int("generations", generations, 1)
        parents = max(2, population_size // 2) if parents is None else parents
        check_int("parents", parents, 2, population_size)
        if (isinstance(mutation_prob, bool) or not isinstance(mutation_prob, (int, float))
                or not 0 <= mutation_prob <= 1):
            raise ValueError(f"mutation_prob must be a number in [0, 1], got {mutation_prob!r}")
        self.population_size, self.generations, self.parents = population_size, generations, parents
        self.mutation_prob = mutation_prob
        super().__init__(space, constraint=constraint, canonical=canonical, seed=seed,
                         max_tries=max_tries)

    @property
    def total(self) -> int:
        return self.population_size * self.generations

    def _exhausted(self) -> bool:
        return self._rounds >= self.generations

    def _propose(self, seen: set[str]) -> list[Sample]:
        space = self.space
        if self._rounds == 0:
            children = self._breed(self.population_size, lambda: space.random(self._rng), seen)
            if len(children) < self.population_size:
                raise self._too_few(len(children), "population_size", self.population_size)
            return children
        parents = [sample for sample, _ in self.top(self.parents)]
        n_mutants = self.population_size // 2
        children = self._breed(n_mutants, lambda: space.mutate(
            self._rng.choice(parents), self.mutation_prob, self._rng), seen)
        children += self._breed(self.population_size - n_mutants, lambda: space.crossover(
            *self._rng.sample(parents, 2), self._rng), seen)
        # as in SPOS: random samples fill what mutation and crossover could not
        children += self._breed(self.population_size - len(children),
                                lambda: space.random(self._rng), seen)
        return children


def __getattr__(name: str) -> Any:
    if name == "EvolutionSearch":  # the name of one release ago
        warnings.warn("EvolutionSearch is now nas_aug.strategies.Evolution", DeprecationWarning,
                      stacklevel=2)
        return Evolution
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
