"""Budgets on the cost of an architecture, and the cost itself."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """What one sub-network costs for one input: MACs (multiply-adds) and parameters."""

    macs: int
    params: int

    def __str__(self) -> str:
        return f"{self.macs / 1e6:.3f}M MACs, {self.params / 1e3:.1f}K params"


def _positive_int(name: str, value) -> int | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 1):
        raise ValueError(f"Budget {name}={value!r} must be a finite number >= 1 (or None)")
    return int(value)


@dataclass(frozen=True, init=False)
class Budget:
    """Upper bounds on MACs and parameters; ``None`` means unbounded.

    ``flops=`` is accepted as another name for ``macs=``: we mean FLOPs as fvcore and papers
    count them, one per multiply-add (torch's own counter counts two).

    >>> budget = Budget(flops=2e6, params=100_000)
    >>> budget.macs, budget.allows(Cost(macs=1_500_000, params=90_000))
    (2000000, True)
    """

    macs: int | None
    params: int | None

    def __init__(self, macs=None, params=None, flops=None):
        macs, flops = _positive_int("macs", macs), _positive_int("flops", flops)
        if macs is not None and flops is not None and macs != flops:
            raise ValueError(f"Budget got macs={macs} and flops={flops}; they are the same "
                             "quantity (one per multiply-add), give one")
        object.__setattr__(self, "macs", macs if macs is not None else flops)
        object.__setattr__(self, "params", _positive_int("params", params))

    def allows(self, cost: Cost) -> bool:
        return ((self.macs is None or cost.macs <= self.macs)
                and (self.params is None or cost.params <= self.params))

    def __str__(self) -> str:
        parts = [f"macs<={self.macs:,}" if self.macs else "",
                 f"params<={self.params:,}" if self.params else ""]
        return "Budget(" + ", ".join(p for p in parts if p) + ")" if any(parts) else "no budget"
