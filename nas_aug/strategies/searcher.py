"""Outer searchers over the samples of a space, behind one ask/tell protocol (as Optuna's
samplers): :class:`~nas_aug.strategies.Evolution`, :class:`~nas_aug.strategies.RandomSearch`.

A searcher is made with its settings alone (``Evolution(population_size=16)``) and bound to a
space, a constraint and a seed when a search starts (:meth:`Searcher.bind`). It hands out
batches of new, distinct, feasible samples (a subclass's :meth:`Searcher._propose`) and keeps
every told score; ``state_dict()`` is JSON data from which ``load_state_dict`` continues the
search exactly, so a killed search resumes where it stopped.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

from tqdm import tqdm

from ..registry import Registry
from ..rng import restore_rng, rng_state
from ..space.choice import Sample, Space, sample_key
from ..validation import check_int

SEARCHERS: Registry[type[Searcher]] = Registry("searcher")
_STATE_VERSION = 1


class Searcher:
    """The ask/tell protocol, its bookkeeping and its saved state; subclasses say which samples
    to try next (:meth:`_propose`) and when they are done (:meth:`_exhausted`).

    ``constraint`` admits samples (a budget), ``canonical`` maps a sample to the representative
    of its architecture (see :func:`nas_aug.supernet.canonical_sample`), so samples that differ
    only in labels without effect count as one. Higher scores are better. ``ask()`` returns
    ``None`` when the search is done, and also while every proposed sample is out awaiting
    ``tell()`` (parallel workers): then ``done`` is still ``False``.

    >>> from nas_aug.space import Space, ValueChoice
    >>> from nas_aug.strategies import RandomSearch
    >>> search = RandomSearch(num_samples=2).bind(Space([ValueChoice("k", [3, 5])]))
    >>> while (sample := search.ask()) is not None:
    ...     search.tell(sample, sample["k"])
    >>> search.best, search.done
    (({'k': 5}, 5.0), True)
    """

    name = "searcher"

    def __init__(self, space: Space | None = None, *, constraint: Callable[[Sample], bool]
                 | None = None, canonical: Callable[[Sample], Sample] | None = None,
                 seed: int | None = None, max_tries: int = 1000):
        _check_constraint(constraint)
        self.max_tries = check_int("max_tries", max_tries, 1)
        self.seed = None if seed is None else check_int("seed", seed, 0)
        self.space: Space | None = None
        if space is not None:
            self._start(space, constraint, canonical, self.seed or 0)
        else:
            self.constraint, self.canonical = constraint, canonical

    def bind(self, space: Space, constraint: Callable[[Sample], bool] | None = None,
             canonical: Callable[[Sample], Sample] | None = None, seed: int = 0) -> Searcher:
        """A fresh search with these settings on ``space``: samples must pass ``constraint``
        and the searcher's own constraint, ``canonical`` applies unless the searcher has its
        own, and ``seed`` is used unless the searcher was given one.

        >>> from nas_aug.space import Space, ValueChoice
        >>> from nas_aug.strategies import Evolution
        >>> search = Evolution(population_size=2, constraint=lambda s: s["k"] > 1)
        >>> bound = search.bind(Space([ValueChoice("k", [1, 2, 3, 4])]), lambda s: s["k"] < 4)
        >>> sorted(bound.ask()["k"] for _ in range(2))
        [2, 3]
        """
        own = self.constraint
        both = constraint if own is None else own if constraint is None else \
            (lambda sample: own(sample) and constraint(sample))
        bound = copy.copy(self)
        bound._start(space, both, self.canonical or canonical,
                     seed if self.seed is None else self.seed)
        return bound

    def _start(self, space: Space, constraint, canonical, seed: int) -> None:
        if not isinstance(space, Space):
            raise TypeError(f"space must be a nas_aug Space, got {type(space).__name__}")
        _check_constraint(constraint)
        self.space, self.constraint, self.canonical = space, constraint, canonical
        self._candidates = [space.candidates(label) for label in space.labels]
        self._rng = random.Random(seed)
        self._rounds = 0  # batches proposed so far
        self._finished = False
        self._queue: list[Sample] = []  # proposed, not yet asked
        self._pending: dict[str, Sample] = {}  # asked, not yet told
        self.history: list[tuple[Sample, float]] = []

    def __repr__(self) -> str:
        settings = {name: getattr(self, name) for name in inspect.signature(type(self)).parameters
                    if name not in ("space", "constraint", "canonical")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"

    # ---- what a subclass says -------------------------------------------------------------
    @property
    def total(self) -> int:
        """How many samples the search evaluates at most (for progress bars)."""
        raise NotImplementedError

    def _exhausted(self) -> bool:
        """True when no further batch is due (every batch proposed)."""
        raise NotImplementedError

    def _propose(self, seen: set[str]) -> list[Sample]:
        """The next batch of new feasible samples (keys not in ``seen``); empty ends it."""
        raise NotImplementedError

    # ---- the protocol ---------------------------------------------------------------------
    def _bound(self) -> Space:
        if self.space is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a space: "
                               "call bind(space, ...) first")
        return self.space

    @property
    def done(self) -> bool:
        """True once every batch is told, or no new sample could be made."""
        self._bound()
        idle = not self._queue and not self._pending
        return self._finished or (idle and self._exhausted())

    def ask(self) -> Sample | None:
        """The next sample to evaluate, or ``None`` (done, or waiting for ``tell``)."""
        self._bound()
        if not self._queue and not self._pending and not self._finished:
            if self._exhausted():
                self._finished = True
            else:
                batch = self._propose({sample_key(s) for s, _ in self.history})
                self._finished = not batch
                self._rounds += bool(batch)
                self._queue = batch
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

    def run(self, evaluate: Callable[[Sample], float], progress: bool = True,
            after_tell: Callable[[], None] | None = None,
            evaluate_batch: Callable[[list[Sample]], list[float]] | None = None
            ) -> tuple[Sample, float]:
        """Ask, evaluate and tell until done (``after_tell()`` after each tell, e.g. to save
        the state); return ``best``. Samples asked but not told (a resumed state) go first.
        ``evaluate_batch``, if given, scores every sample the searcher offers before it needs
        a tell (a generation) in one call, in place of ``evaluate``."""
        bar = tqdm(total=self.total, initial=len(self.history), disable=not progress,
                   desc=self.name, unit="sample")
        try:
            while not self.done:
                batch = self._next_batch(whole=evaluate_batch is not None)
                if not batch:  # finished early: no new sample could be made
                    break
                scores = evaluate_batch(batch) if evaluate_batch is not None else \
                    [evaluate(batch[0])]
                for sample, score in zip(batch, scores):
                    self.tell(sample, score)
                    if after_tell is not None:
                        after_tell()
                    bar.set_postfix(best=f"{self.best[1]:.4g}", refresh=False)
                    bar.update(1)
        finally:
            bar.close()
        return self.best

    def _next_batch(self, whole: bool) -> list[Sample]:
        """The samples to evaluate next: those asked but not told (a resumed state) first,
        then new ones; every one the searcher offers before it needs a tell if ``whole``,
        else one."""
        batch = [dict(sample) for sample in self._pending.values()]
        while (whole or not batch) and (sample := self.ask()) is not None:
            batch.append(sample)
        return batch if whole else batch[:1]

    def _breed(self, count: int, make: Callable[[], Sample], seen: set[str]) -> list[Sample]:
        """Up to ``count`` new feasible samples; stops after ``max_tries`` failed draws in a
        row. The keys of those made are added to ``seen``."""
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

    def _too_few(self, found: int, setting: str, wanted: int) -> ValueError:
        """The error for a first batch that could not be filled (``setting=wanted`` asked)."""
        space = self._bound()
        reason = (f"the space has only {space.size} samples" if space.size < wanted
                  else "the constraint is likely too tight")
        return ValueError(f"found only {found} of {setting}={wanted} distinct feasible samples "
                          f"(max_tries={self.max_tries} draws in a row found no new one): "
                          f"{reason}")

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The search state as JSON data (samples as candidate indices, in label order)."""
        space = self._bound()
        return {
            "version": _STATE_VERSION, "searcher": self.name, "labels": list(space.labels),
            "rounds": self._rounds, "finished": self._finished,
            "queue": [self._encode(s) for s in self._queue],
            "pending": [self._encode(s) for s in self._pending.values()],
            "history": [[self._encode(s), score] for s, score in self.history],
            "rng": rng_state(self._rng),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``, also after a JSON round trip; settings stay this object's."""
        labels = list(self._bound().labels)
        try:
            if state["version"] != _STATE_VERSION or state["labels"] != labels:
                raise ValueError(f"got version {state['version']!r} with labels {state['labels']!r}"
                                 f", expected version {_STATE_VERSION} with labels {labels}")
            if state.get("searcher", self.name) != self.name:
                raise ValueError(f"it is the state of searcher {state['searcher']!r}")
            queue, pending = ([self._decode(s) for s in state[k]] for k in ("queue", "pending"))
            history = [(self._decode(s), float(score)) for s, score in state["history"]]
            rng = restore_rng(state["rng"])
            rounds, finished = int(state["rounds"]), bool(state["finished"])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise ValueError(f"not a state_dict() of a {type(self).__name__} on {self.space!r}: "
                             f"{err}") from err
        self._rng, self._rounds, self._finished = rng, rounds, finished
        self._queue, self._pending = queue, {sample_key(s): s for s in pending}
        self.history = history

    def _encode(self, sample: Sample) -> list[int]:
        return [c.index(sample[label]) for label, c in zip(self.space.labels, self._candidates)]

    def _decode(self, indices: list[int]) -> Sample:
        if len(indices) != len(self._candidates) or any(i < 0 for i in indices):
            raise ValueError(f"sample {indices!r} is not {len(self._candidates)} candidate indices")
        return {label: c[i] for label, c, i in zip(self.space.labels, self._candidates, indices)}


def _check_constraint(constraint: object) -> None:
    if constraint is not None and not callable(constraint):
        raise TypeError(f"constraint must be a callable sample -> bool or None, "
                        f"got {constraint!r}")


def get_searcher(searcher: str | Searcher) -> Searcher:
    """``searcher`` itself, or a searcher with default settings registered under that name."""
    if isinstance(searcher, Searcher):
        return searcher
    return SEARCHERS.get(searcher)()
