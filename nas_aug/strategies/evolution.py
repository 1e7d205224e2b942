"""Evolutionary search over the samples of a space (SPOS, Guo et al. 2020): ask/tell or ``run``."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from tqdm import tqdm

from ..rng import restore_rng, rng_state
from ..space.choice import Sample, Space, sample_key
from ..validation import check_int

_STATE_VERSION = 1


class EvolutionSearch:
    """Evolutionary search: a random population, then mutation and crossover of the best samples.

    Generation 0 is ``population_size`` distinct feasible random samples. Each later generation
    takes the ``parents`` best samples evaluated so far and makes half its children by mutation
    and half by crossover; random samples fill any shortfall. Only samples that pass
    ``constraint`` and were never handed out before are asked; the search ends early when a
    generation gets no new child. Higher scores are better. ``canonical`` maps each new sample
    to a representative of its architecture (see ``nas_aug.supernet.canonical_sample``), so
    samples that differ only in labels without effect count as one.

    ``ask()`` hands out the current generation one sample at a time; the next generation is made
    once every sample of the current one has been told. ``ask()`` returns ``None`` when the search
    is done, and also while all of the current generation is out awaiting ``tell()`` (parallel
    workers): then ``done`` is still ``False``, so tell the outstanding scores and ask again.

    >>> from nas_aug.space.choice import Space, ValueChoice
    >>> space = Space([ValueChoice(label, [1, 2, 3, 4]) for label in "abc"])
    >>> search = EvolutionSearch(space, population_size=6, generations=4,
    ...                          constraint=lambda s: sum(s.values()) <= 6)
    >>> search.run(lambda s: s["a"] * s["b"] * s["c"], progress=False)
    ({'a': 2, 'b': 2, 'c': 2}, 8.0)
    >>> search.done, len(search.history) <= 6 * 4
    (True, True)
    """

    def __init__(self, space: Space, population_size: int = 16, generations: int = 8,
                 parents: int | None = None, mutation_prob: float = 0.1, constraint:
                 Callable[[Sample], bool] | None = None, seed: int = 0, max_tries: int = 1000,
                 canonical: Callable[[Sample], Sample] | None = None):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a nas_aug Space, got {type(space).__name__}")
        check_int("population_size", population_size, 2)
        check_int("generations", generations, 1)
        parents = max(2, population_size // 2) if parents is None else parents
        check_int("parents", parents, 2, population_size)
        if (isinstance(mutation_prob, bool) or not isinstance(mutation_prob, (int, float))
                or not 0 <= mutation_prob <= 1):
            raise ValueError(f"mutation_prob must be a number in [0, 1], got {mutation_prob!r}")
        if constraint is not None and not callable(constraint):
            raise TypeError(f"constraint must be a callable sample -> bool or None, "
                            f"got {constraint!r}")
        check_int("max_tries", max_tries, 1)
        self.space = space
        self.population_size, self.generations, self.parents = population_size, generations, parents
        self.mutation_prob, self.constraint, self.max_tries = mutation_prob, constraint, max_tries
        self.canonical = canonical
        self._candidates = [space.candidates(label) for label in space.labels]
        self._rng = random.Random(seed)
        self._generation = -1  # index of the generation being handed out
        self._finished = False
        self._queue: list[Sample] = []  # current generation, not yet asked
        self._pending: dict[str, Sample] = {}  # asked, not yet told
        self.history: list[tuple[Sample, float]] = []

    @property
    def done(self) -> bool:
        """True once every generation is told, or no new child could be made."""
        idle = not self._queue and not self._pending
        return self._finished or (idle and self._generation + 1 >= self.generations)

    def ask(self) -> Sample | None:
        """The next sample to evaluate, or ``None`` (done, or waiting for ``tell``)."""
        if not self._queue and not self._pending and not self._finished:
            self._next_generation()
        if not self._queue:
            return None
        sample = self._queue.pop(0)
        self._pending[sample_key(sample)] = sample
        return dict(sample)

    def tell(self, sample: Mapping[str, Any], score: float) -> None:
        """Record the score (higher is better) of a sample returned by ``ask()``."""
        if not isinstance(sample, Mapping):
            raise TypeError(f"a sample is a {{label: value}} dict, got {sample!r}")
        key = sample_key(sample)
        if key not in self._pending:
            told = any(sample_key(s) == key for s, _ in self.history)
            why = "it was already told" if told else "ask() never returned it"
            raise ValueError(f"cannot tell sample {dict(sample)!r}: {why}; "
                             f"{len(self._pending)} asked sample(s) await a score")
        try:
            value = float(score)  # also numpy / torch scalars
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"score must be a finite number, got {score!r} for {dict(sample)!r}")
        sample = self._pending.pop(key)
        self.history.append((dict(sample), value))

    @property
    def best(self) -> tuple[Sample, float]:
        """The best ``(sample, score)`` told so far (the first told among equal scores)."""
        if not self.history:
            raise RuntimeError("no score told yet: call tell() (or run()) before reading best")
        return self.top(1)[0]

    def top(self, k: int) -> list[tuple[Sample, float]]:
        """The best ``k`` ``(sample, score)`` pairs told so far, best first (all distinct, as
        no sample is asked twice; equal scores keep the order told)."""
        check_int("k", k, 0)
        ranked = sorted(self.history, key=lambda pair: -pair[1])[:k]
        return [(dict(sample), score) for sample, score in ranked]

    def run(self, evaluate: Callable[[Sample], float],
            progress: bool = True) -> tuple[Sample, float]:
        """Ask, evaluate and tell until done; return ``best``.

        Samples asked but not told (e.g. in a resumed state) are evaluated first.
        """
        bar = tqdm(total=self.population_size * self.generations, initial=len(self.history),
                   disable=not progress, desc="evolution", unit="sample")
        try:
            while not self.done:
                sample = dict(next(iter(self._pending.values()))) if self._pending else self.ask()
                if sample is None:  # finished early: no new child could be made
                    break
                self.tell(sample, evaluate(sample))
                bar.set_postfix(best=f"{self.best[1]:.4g}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
        return self.best

    def _next_generation(self) -> None:
        if self._generation + 1 >= self.generations:
            self._finished = True
            return
        seen = {sample_key(s) for s, _ in self.history}  # queue and pending are empty here
        if self._generation < 0:
            children = self._breed(self.population_size, lambda: self.space.random(self._rng), seen)
            if len(children) < self.population_size:
                reason = (f"the space has only {self.space.size} samples"
                          if self.space.size < self.population_size
                          else "the constraint is likely too tight")
                raise ValueError(f"found only {len(children)} of population_size="
                                 f"{self.population_size} distinct feasible samples (max_tries="
                                 f"{self.max_tries} draws in a row found no new one): {reason}")
        else:
            parents = [sample for sample, _ in self.top(self.parents)]
            n_mutants = self.population_size // 2
            children = self._breed(n_mutants, lambda: self.space.mutate(
                self._rng.choice(parents), self.mutation_prob, self._rng), seen)
            children += self._breed(self.population_size - n_mutants, lambda: self.space.crossover(
                *self._rng.sample(parents, 2), self._rng), seen)
            # as in SPOS: random samples fill what mutation and crossover could not
            children += self._breed(self.population_size - len(children),
                                    lambda: self.space.random(self._rng), seen)
        if not children:
            self._finished = True
            return
        self._generation += 1
        self._queue = children

    def _breed(self, count: int, make: Callable[[], Sample], seen: set[str]) -> list[Sample]:
        """Up to ``count`` new feasible samples; stops after ``max_tries`` failed draws in a row."""
        children: list[Sample] = []
        while len(children) < count:
            for _ in range(self.max_tries):
                child = make()
                if self.canonical is not None:
                    child = self.canonical(child)
                key = sample_key(child)
                if key not in seen and (self.constraint is None or self.constraint(dict(child))):
                    seen.add(key)
                    children.append(child)
                    break
            else:
                break
        return children

    def state_dict(self) -> dict[str, Any]:
        """The search state as plain data (samples as candidate indices, in ``labels`` order)."""
        return {
            "version": _STATE_VERSION, "labels": list(self.space.labels),
            "generation": self._generation, "finished": self._finished,
            "queue": [self._encode(s) for s in self._queue],
            "pending": [self._encode(s) for s in self._pending.values()],
            "history": [[self._encode(s), score] for s, score in self.history],
            "rng": rng_state(self._rng),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``, also after a JSON round trip; settings stay this object's."""
        labels = list(self.space.labels)
        try:
            if state["version"] != _STATE_VERSION or state["labels"] != labels:
                raise ValueError(f"got version {state['version']!r} with labels {state['labels']!r}"
                                 f", expected version {_STATE_VERSION} with labels {labels}")
            queue, pending = ([self._decode(s) for s in state[k]] for k in ("queue", "pending"))
            history = [(self._decode(s), float(score)) for s, score in state["history"]]
            rng = restore_rng(state["rng"])
            generation, finished = int(state["generation"]), bool(state["finished"])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise ValueError(f"not a state_dict() of an EvolutionSearch on {self.space!r}: "
                             f"{err}") from err
        self._rng, self._generation, self._finished = rng, generation, finished
        self._queue, self._pending = queue, {sample_key(s): s for s in pending}
        self.history = history

    def _encode(self, sample: Sample) -> list[int]:
        return [c.index(sample[label]) for label, c in zip(self.space.labels, self._candidates)]

    def _decode(self, indices: list[int]) -> Sample:
        if len(indices) != len(self._candidates) or any(i < 0 for i in indices):
            raise ValueError(f"sample {indices!r} is not {len(self._candidates)} candidate indices")
        return {label: c[i] for label, c, i in zip(self.space.labels, self._candidates, indices)}
