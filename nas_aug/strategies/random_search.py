"""Plain random search over the samples of a space, as a searcher: the baseline to beat."""

from __future__ import annotations

from collections.abc import Callable

from ..space.choice import Sample, Space
from ..validation import check_int
from .searcher import SEARCHERS, Searcher


@SEARCHERS.register("random")
class RandomSearch(Searcher):
    """``num_samples`` distinct feasible samples drawn uniformly, handed out in batches of
    ``batch_size``; it ends early when no new feasible sample can be drawn.

    Args:
        space: the space to search; ``None`` until :meth:`bind` (``OneShotNAS`` binds it).
        num_samples: how many samples to evaluate (at least 1).
        batch_size: samples proposed at once (what parallel workers could share).
        constraint: admits a sample (e.g. a budget); ``None`` admits all.
        canonical: maps a sample to its architecture's representative.
        seed: the search's seed (default: the one :meth:`bind` gets, else 0).
        max_tries: failed draws in a row after which a batch stays short.

    Raises:
        ValueError: a setting out of range; from ``ask()``, a first batch without any
            feasible sample.

    >>> from nas_aug.space.choice import Space, ValueChoice
    >>> space = Space([ValueChoice(label, [1, 2, 3]) for label in "ab"])
    >>> search = RandomSearch(space, num_samples=9, batch_size=4)
    >>> search.run(lambda s: s["a"] - s["b"], progress=False)
    ({'a': 3, 'b': 1}, 2.0)
    >>> len(search.history)
    9
    """

    name = "random"

    def __init__(self, space: Space | None = None, num_samples: int = 128, batch_size: int = 16,
                 constraint: Callable[[Sample], bool] | None = None, seed: int | None = None,
                 max_tries: int = 1000, canonical: Callable[[Sample], Sample] | None = None):
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        super().__init__(space, constraint=constraint, canonical=canonical, seed=seed,
                         max_tries=max_tries)

    @property
    def total(self) -> int:
        return self.num_samples

    def _exhausted(self) -> bool:
        return len(self.history) + len(self._pending) + len(self._queue) >= self.num_samples

    def _propose(self, seen: set[str]) -> list[Sample]:
        count = min(self.batch_size, self.num_samples - len(self.history))
        batch = self._breed(count, lambda: self.space.random(self._rng), seen)
        if self._rounds == 0 and not batch:
            raise self._too_few(0, "batch_size", count)
        return batch
