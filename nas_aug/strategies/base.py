"""One-shot NAS strategies behind one base class, registered by name.

A :class:`Strategy` says how the supernet trains inside the user's fit and how the
architecture is chosen when training ends. ``OneShotNAS`` drives every strategy through the
same hooks and never asks which one it holds; adding a strategy is one new file that
subclasses :class:`Strategy` and registers itself in :data:`STRATEGIES`.

The hooks, in the order of a fit: :meth:`~Strategy.setup` (the supernet, its space, the
budget), :meth:`~Strategy.prepare` (once the input shape and cost table are known),
:meth:`~Strategy.to` (the fit's device), then per epoch :meth:`~Strategy.set_epoch` and per
training step :meth:`~Strategy.outer_step` (strategies with outer variables),
:meth:`~Strategy.set_batch_loss` and :meth:`~Strategy.train_paths`;
:meth:`~Strategy.validation_sample` while validating; and
:meth:`~Strategy.finish`, which returns the :class:`~nas_aug.result.SearchResult`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..bilevel import OuterStep
from ..constraints import Budget, CostTable
from ..registry import Registry
from ..result import Candidate, SearchResult
from ..space import Sample, Space
from ..supernet import canonical_sample
from ..validation import closest_match
from .searcher import Searcher

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
LARGEST_WITHIN = "largest within budget"  # the reference a search has to beat


@dataclass
class SearchContext:
    """What a strategy searches: the supernet, its space, the budget, the outer searcher
    (unbound) and its seed, and the cost table once it is counted (in ``setup``, or on the
    fit's first batch)."""

    supernet: nn.Module
    space: Space
    budget: Budget | None = None
    searcher: Searcher | None = None
    seed: int = 0
    cost_table: CostTable | None = None

    def new_search(self) -> Searcher:
        """The searcher bound to this space, the budget and one sample per architecture."""
        supernet, space = self.supernet, self.space
        return self.searcher.bind(space, constraint=self.feasible(), seed=self.seed,
                                  canonical=lambda s: canonical_sample(supernet, s, space))

    def feasible(self) -> Callable[[Sample], bool] | None:
        """The budget as a constraint on samples (``None`` without a budget)."""
        if self.budget is None:
            return None
        budget, table = self.budget, self.cost_table
        return lambda sample: budget.allows(table(sample))

    def candidate(self, sample: Sample, score: float, **extra: Any) -> Candidate:
        return Candidate.of(sample, score, self.cost_table(sample), **extra)

    def result(self, chosen: Candidate, top: list[Candidate], candidates: list[Candidate],
               strategy: str, **extra: Any) -> SearchResult:
        """A result with the context's input shape, budget and reference sub-networks: the
        largest and the smallest, and with a budget the largest within it
        (:meth:`~nas_aug.constraints.CostTable.largest_within`)."""
        table = self.cost_table
        samples = {"largest": self.space.largest(), "smallest": self.space.smallest()}
        if self.budget is not None and (fits := table.largest_within(self.budget)) is not None:
            samples[LARGEST_WITHIN] = canonical_sample(self.supernet, fits, self.space)
        references = {name: Candidate.of(sample, None, table(sample))
                      for name, sample in samples.items()}
        return SearchResult(chosen=chosen, top=top, candidates=candidates, strategy=strategy,
                            input_shape=table.input_shape, budget=self.budget,
                            references=references, **extra)


@dataclass(frozen=True)
class Scoring:
    """How a finishing strategy scores sub-networks (given by the callback): ``evaluate``
    gives a sample's held-out score and leaves it active (batch norm recalibrated);
    ``top_k`` candidates go into the result's ``top``; ``on_candidate`` sees each scored candidate;
    ``saved`` is the state ``save_state`` last received in an earlier, interrupted
    finish on the same trained supernet (``None`` if there is none); ``seeds`` are samples
    a searching strategy ranks beside its own (the winners of tighter budgets, so a looser
    budget's winner never scores below theirs); ``evaluate_many``, where given, scores
    several samples at once (spread over the fit's processes)."""

    evaluate: Callable[[Sample], float]
    top_k: int = 5
    progress: bool = True
    on_candidate: Callable[[Candidate], None] = lambda candidate: None
    saved: Mapping[str, Any] | None = None
    save_state: Callable[[dict[str, Any]], None] = lambda state: None
    seeds: tuple[Sample, ...] = ()
    evaluate_many: Callable[[list[Sample]], list[float]] | None = None


@dataclass(frozen=True)
class FitInfo:
    """What a strategy may refuse about the fit it runs in, before training."""

    max_epochs: int | None
    world_size: int
    automatic_optimization: bool


class Strategy:
    """The base of one-shot NAS strategies; see the module docstring for the hooks.

    Class attributes: ``name`` (its registry name), ``has_outer_step`` (it trains outer
    variables on held-out batches between the user's steps: the callback then gives
    :meth:`outer_step` an :class:`~nas_aug.bilevel.OuterStep` at every training step),
    ``uses_searcher`` (its :meth:`finish` runs the outer searcher), ``family`` (a word for
    the strategies that share its options, used in error messages).

    >>> from nas_aug.strategies import STRATEGIES
    >>> [(name, STRATEGIES[name].has_outer_step) for name in STRATEGIES]
    [('darts', True), ('gdas', True), ('proxyless', True), ('spos', False)]
    """

    name: ClassVar[str] = "strategy"
    has_outer_step: ClassVar[bool] = False
    uses_searcher: ClassVar[bool] = False
    family: ClassVar[str] = ""

    context: SearchContext

    def seed(self, seed: int) -> None:
        """Start this strategy's own randomness from ``seed`` (``OneShotNAS`` passes its own)."""

    def setup(self, context: SearchContext) -> None:
        """Take the supernet to search (in the callback's ``setup``, before any checkpoint
        state is loaded into this strategy)."""
        self.context = context

    def check_fit(self, fit: FitInfo) -> None:
        """Refuse a fit this strategy cannot run in, with a ``ValueError`` saying why."""

    def check_budget(self) -> None:
        """Fail now (``ValueError``) if the budget leaves too little to search; the cost
        table is built."""

    def prepare(self, example: torch.Tensor) -> None:
        """The input shape is known (``example`` is a small batch on the supernet's device)."""

    def to(self, device: torch.device) -> None:
        """Move this strategy's own tensors to the fit's device."""

    def set_epoch(self, epoch: int, max_epochs: int | None) -> None:
        """A training epoch begins (0-based)."""

    def outer_step(self, step: OuterStep) -> None:
        """One step on the outer variables (only with ``has_outer_step``)."""
        raise NotImplementedError

    def set_batch_loss(self, loss: Callable[[Sample], float | None]) -> None:
        """Before each :meth:`train_paths`: ``loss(sample)`` activates ``sample`` and gives
        the user's loss of it on this step's training batch (a forward without gradients
        that leaves the model's buffers and the fit's random stream as they were; ``None``
        where the user's step skips the batch), for strategies that choose paths by it."""

    def train_paths(self) -> list[Sample]:
        """Before the user's weight step: make what this step trains active in the supernet;
        return further samples whose gradients add to this step's (the sandwich rule)."""
        raise NotImplementedError

    def validation_sample(self) -> Sample:
        """The plain path validated while fitting (any mixing is turned off by then)."""
        raise NotImplementedError

    distills: ClassVar[bool] = False  # instances say: their extra paths learn from the first

    def path_loss(self, loss: torch.Tensor, logits: torch.Tensor,
                  teacher: torch.Tensor) -> torch.Tensor:
        """The loss an extra path of :meth:`train_paths` trains on, given the user's ``loss``
        for it, its ``logits`` and the first path's detached ``teacher`` logits (called only
        where ``distills``)."""
        return loss

    def metrics(self) -> dict[str, float]:
        """What to log at the end of a training epoch (keys without a prefix)."""
        return {}

    def finish(self, scoring: Scoring) -> SearchResult:
        """Choose the architecture when training ends; leave it active in the supernet."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict()`` (after :meth:`setup`)."""

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options().items())
        return f"{type(self).__name__}({options})"

    def options(self) -> dict[str, Any]:
        """The constructor arguments this strategy was made with (its settings)."""
        return {name: getattr(self, name) for name in _parameters(type(self))}


def _parameters(cls: type) -> list[str]:
    return [name for name, p in inspect.signature(cls).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def get_strategy(strategy: str | Strategy, others: Iterable[str] = (), **options: Any
                 ) -> Strategy:
    """``strategy`` itself (then no ``options``), or the strategy registered under that name
    made with ``options``; unknown names and options raise ``ValueError`` naming them, with
    the closest name among the strategy's options and ``others`` (the caller's own).

    >>> get_strategy("darts", lr=3e-3).lr
    0.003
    >>> get_strategy("spos", lr=0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: options ['lr'] belong to the gradient strategies [...], not to strategy='spos'
    """
    if isinstance(strategy, Strategy):
        if options:
            raise ValueError(f"options {sorted(options)} go into the strategy object itself: "
                             f"{type(strategy).__name__}({', '.join(options)}=...)")
        return strategy
    cls = STRATEGIES.get(strategy)
    accepted = _parameters(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        owners = [name for name in STRATEGIES
                  if set(unknown) <= set(_parameters(STRATEGIES.get(name)))]
        families = {STRATEGIES.get(name).family for name in owners}
        if owners and len(families) == 1:
            raise ValueError(f"options {unknown} belong to the {families.pop()} strategies "
                             f"{owners}, not to strategy={strategy!r}")
        hint = closest_match(unknown[0], [*accepted, *others])
        raise ValueError(f"OneShotNAS(strategy={strategy!r}) got unknown option(s) {unknown}"
                         f"{hint}; its options are {accepted}")
    return cls(**options)

