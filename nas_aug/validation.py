"""Argument checks shared across the package: each error names the value and what is accepted.

>>> check_int("population_size", 1, 2)
Traceback (most recent call last):
...
ValueError: population_size must be an integer >= 2, got 1
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from typing import Any


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) in ``[low, high]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        accepted = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return int(value)


def check_positive(name: str, value: Any, *, allow_zero: bool = False, hint: str = "") -> float:
    """``value`` as a float if it is a finite number (not a bool) above 0, or at least 0 with
    ``allow_zero``; ``hint`` adds to the error what else is accepted.

    >>> check_positive("lr", 0)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a positive number, got 0
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"number{hint}, got {value!r}")
    return float(value)


def check_fraction(name: str, value: Any, *, allow_one: bool = False) -> None:
    """``value`` must be a number in (0, 1), or (0, 1] with ``allow_one``."""
    interval = "(0, 1]" if allow_one else "the open interval (0, 1)"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0 < value < 1 or (allow_one and value == 1)):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def closest_match(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the valid name closest to ``name``, else ``""``.

    >>> closest_match("darst", ["darts", "gdas"])
    " (did you mean 'darts'?)"
    """
    match = difflib.get_close_matches(name, list(valid), n=1) if isinstance(name, str) else []
    return f" (did you mean {match[0]!r}?)" if match else ""
