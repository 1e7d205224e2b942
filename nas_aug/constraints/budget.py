"""Budgets on the cost of an architecture, and the cost itself."""

# No `from __future__ import annotations` here: jsonargparse (LightningCLI) evaluates the string
# annotations of a dataclass's __init__ from the dataclass's fields, which would give
# Budget(macs=...) the field's type (int) instead of __init__'s (2e6 is a float in YAML).
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """What one sub-network costs for one input: MACs (multiply-adds) and parameters, and its
    latency in milliseconds where it was measured (``None`` otherwise)."""

    macs: int
    params: int
    latency_ms: float | None = None

    def __str__(self) -> str:
        text = f"{self.macs / 1e6:.3f}M MACs, {self.params / 1e3:.1f}K params"
        return text if self.latency_ms is None else f"{text}, {self.latency_ms:.3g} ms"


def _positive_int(name: str, value) -> int | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 1):
        raise ValueError(f"Budget {name}={value!r} must be a finite number >= 1 (or None)")
    return int(value)


@dataclass(frozen=True, init=False)
class Budget:
    """Upper bounds on MACs, parameters and latency (ms, measured on the fit's device by a
    latency table); ``None`` leaves that cost unbounded (at least one limit is set: no budget
    at all is ``budget=None``).

    ``flops=`` is accepted as another name for ``macs=``: we mean FLOPs as fvcore and papers
    count them, one per multiply-add (torch's own counter counts two). In a LightningCLI
    config a budget is a mapping (``budget: {macs: 2e6}``) or ``class_path: nas_aug.Budget``
    with ``init_args``.

    Args:
        macs: the most multiply-adds per input (a whole number >= 1).
        params: the most parameters.
        flops: another name for ``macs`` (give one of the two).
        latency_ms: the most milliseconds of a forward pass on the fit's device.

    >>> budget = Budget(flops=2e6, params=100_000)
    >>> budget.macs, budget.allows(Cost(macs=1_500_000, params=90_000))
    (2000000, True)
    >>> Budget(latency_ms=2.5).allows(Cost(macs=10, params=10, latency_ms=3.0))
    False
    """

    macs: int | None
    params: int | None
    latency_ms: float | None

    def __init__(self, macs: int | float | None = None, params: int | float | None = None,
                 flops: int | float | None = None, latency_ms: float | None = None):
        macs, flops = _positive_int("macs", macs), _positive_int("flops", flops)
        if macs is not None and flops is not None and macs != flops:
            raise ValueError(f"Budget got macs={macs} and flops={flops}; they are the same "
                             "quantity (one per multiply-add), give one")
        object.__setattr__(self, "macs", macs if macs is not None else flops)
        object.__setattr__(self, "params", _positive_int("params", params))
        if latency_ms is not None and (
                isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float))
                or not math.isfinite(latency_ms) or latency_ms <= 0):
            raise ValueError(f"Budget latency_ms={latency_ms!r} must be a positive number of "
                             "milliseconds (or None)")
        object.__setattr__(self, "latency_ms",
                           None if latency_ms is None else float(latency_ms))
        if self.macs is None and self.params is None and self.latency_ms is None:
            raise ValueError("Budget() sets no limit: give macs (or flops), params or "
                             "latency_ms; for a search without a budget pass budget=None")

    def allows(self, cost: Cost) -> bool:
        if self.latency_ms is not None and cost.latency_ms is None:
            raise ValueError(f"{self} limits latency but this cost has none measured; build "
                             "the cost table's latency (CostTable.measure_latency) first")
        return ((self.macs is None or cost.macs <= self.macs)
                and (self.params is None or cost.params <= self.params)
                and (self.latency_ms is None or cost.latency_ms <= self.latency_ms))

    def excess(self, cost: Cost) -> float:
        """The largest ratio of a cost to its limit: at most 1 where the budget allows ``cost``.

        >>> Budget(macs=1000, params=100).excess(Cost(macs=500, params=150))
        1.5
        """
        self.allows(cost)  # a latency limit needs a measured latency
        return max(value / limit for value, limit in (
            (cost.macs, self.macs), (cost.params, self.params),
            (cost.latency_ms, self.latency_ms)) if limit is not None)

    def __str__(self) -> str:
        parts = [f"macs<={self.macs:,}" if self.macs else "",
                 f"params<={self.params:,}" if self.params else "",
                 f"latency<={self.latency_ms:g} ms" if self.latency_ms else ""]
        return "Budget(" + ", ".join(p for p in parts if p) + ")" if any(parts) else "no budget"


def check_budgets(budgets: Sequence[Budget]) -> tuple[Budget, ...]:
    """``budgets`` as a tuple, if they are Budgets that set the same limits and increase
    (each at least the one before in every limit, and above it in one).

    >>> check_budgets([Budget(macs=2e6), Budget(macs=1e6)])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: budgets must increase: budgets[1]=Budget(macs<=1,000,000) is not above ...
    """
    budgets = tuple(budgets) if isinstance(budgets, (list, tuple)) else None
    if not budgets or not all(isinstance(b, Budget) for b in budgets):
        raise ValueError(f"budgets must be a non-empty list of nas_aug.Budget, got {budgets!r}")
    limits = [[name for name in ("macs", "params", "latency_ms") if getattr(b, name) is not None]
              for b in budgets]
    for index, (before, after) in enumerate(zip(budgets, budgets[1:]), 1):
        if limits[index] != limits[0]:
            raise ValueError(f"every budget must set the same limits: budgets[0] limits "
                             f"{limits[0]}, budgets[{index}] limits {limits[index]}")
        pairs = [(getattr(before, name), getattr(after, name)) for name in limits[0]]
        if not all(a >= b for b, a in pairs) or all(a == b for b, a in pairs):
            raise ValueError(f"budgets must increase: budgets[{index}]={after} is not above "
                             f"budgets[{index - 1}]={before}")
    return budgets
