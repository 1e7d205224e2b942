"""Optuna's samplers as outer searchers, through Optuna's ask/tell (an optional dependency:
``pip install 'nas_aug[optuna]'``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..space.choice import Sample, Space, sample_key
from ..validation import check_int, closest_match
from .searcher import SEARCHERS, Searcher

# sampler names -> the class in optuna.samplers (each takes seed=)
SAMPLERS = {"tpe": "TPESampler", "gp": "GPSampler", "nsga2": "NSGAIISampler",
            "cmaes": "CmaEsSampler", "random": "RandomSampler", "qmc": "QMCSampler"}


def _optuna() -> Any:
    try:
        return importlib.import_module("optuna")
    except ImportError:
        raise ImportError("OptunaSearch runs Optuna's samplers and needs Optuna: "
                          "pip install 'nas_aug[optuna]'") from None


@SEARCHERS.register("optuna")
class OptunaSearch(Searcher):
    """Any Optuna sampler as an outer searcher: each label is one categorical parameter (the
    index of its value), the sampler proposes through ``study.ask()`` and learns every score
    through ``study.tell()``. Constraint handling stays nas_aug's: a proposal outside the
    constraint is told to Optuna as pruned and never evaluated, and a proposal already scored
    is told its known score without being evaluated again. Samples go one at a time.

    Every proposal rebuilds the study from the told history and makes the sampler afresh with
    a seed drawn from the search's own random stream, so the saved state is the history and a
    resumed search asks what an uninterrupted one would.

    Args:
        space: the space to search; ``None`` until :meth:`bind` (``OneShotNAS`` binds it).
        sampler: a name in :data:`SAMPLERS` (``"tpe"``, ``"gp"``, ``"nsga2"``, ...) or a
            function ``seed -> optuna.samplers.BaseSampler``.
        num_samples: how many samples to evaluate (at least 1).
        constraint, canonical, seed, max_tries: as for every
            :class:`~nas_aug.strategies.searcher.Searcher`.

    Raises:
        ValueError: an unknown sampler name (closest name), a setting out of range.
        ImportError: Optuna is not installed (with the extra to install).

    >>> OptunaSearch(sampler="tpee")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown Optuna sampler 'tpee' (did you mean 'tpe'?); choose one of [...] ...
    """

    name = "optuna"

    def __init__(self, space: Space | None = None, sampler: str | Callable[[int], Any] = "tpe",
                 num_samples: int = 128, constraint: Callable[[Sample], bool] | None = None,
                 seed: int | None = None, max_tries: int = 1000,
                 canonical: Callable[[Sample], Sample] | None = None):
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            raise ValueError(f"unknown Optuna sampler {sampler!r}{closest_match(sampler, SAMPLERS)}"
                             f"; choose one of {sorted(SAMPLERS)} or pass a function "
                             "seed -> optuna sampler")
        if not isinstance(sampler, str) and not callable(sampler):
            raise ValueError(f"sampler must be a name in {sorted(SAMPLERS)} or a function "
                             f"seed -> optuna sampler, got {sampler!r}")
        self.sampler = sampler
        self.num_samples = check_int("num_samples", num_samples, 1)
        super().__init__(space, constraint=constraint, canonical=canonical, seed=seed,
                         max_tries=max_tries)

    @property
    def total(self) -> int:
        return self.num_samples

    def _exhausted(self) -> bool:
        return len(self.history) + len(self._pending) + len(self._queue) >= self.num_samples

    def _make_sampler(self, seed: int) -> Any:
        if callable(self.sampler):
            return self.sampler(seed)
        return getattr(_optuna().samplers, SAMPLERS[self.sampler])(seed=seed)

    def _distributions(self) -> dict[str, Any]:
        optuna = _optuna()
        return {label: optuna.distributions.CategoricalDistribution(list(range(len(values))))
                for label, values in zip(self.space.labels, self._candidates)}

    def _params(self, sample: Sample) -> dict[str, int]:
        return dict(zip(self.space.labels, self._encode(sample)))

    def _new_study(self) -> Any:
        optuna = _optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=self._make_sampler(0))
        distributions = self._distributions()
        for sample, value in self.history:
            study.add_trial(optuna.trial.create_trial(
                params=self._params(sample), distributions=distributions, value=value))
        return study

    def _propose(self, seen: set[str]) -> list[Sample]:
        optuna, study = _optuna(), self._new_study()
        scores = {sample_key(s): v for s, v in self.history}
        distributions = self._distributions()
        for _ in range(self.max_tries):
            study.sampler = self._make_sampler(self._rng.randrange(2**31))
            trial = study.ask(distributions)
            sample = self._decode([trial.params[label] for label in self.space.labels])
            if self.canonical is not None:
                sample = self.canonical(sample)
            key = sample_key(sample)
            if key in scores:  # scored already: Optuna learns it again, nothing is evaluated
                study.tell(trial, scores[key])
            elif key in seen or (self.constraint is not None and not self.constraint(sample)):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                seen.add(key)
                return [sample]
        if self._rounds == 0:
            raise self._too_few(0, "num_samples", 1)
        return []
