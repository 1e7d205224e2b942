"""Argument checks shared across the package: each error names the value and what is accepted.

>>> check_int("population_size", 1, 2)
Traceback (most recent call last):
...
ValueError: population_size must be an integer >= 2, got 1
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from collections.abc import Iterable
from typing import Any, Union


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


def check_json_fields(data: dict[str, Any], cls: type, where: str) -> None:
    """Refuse JSON ``data`` whose field values do not have the types the dataclass ``cls``
    declares (a list stands for a tuple, an int for a float); ``where`` names the file.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Shape:
    ...     dims: tuple[int, ...]
    >>> check_json_fields({"dims": "1x8x8"}, Shape, "shape.json")
    Traceback (most recent call last):
    ...
    ValueError: shape.json: field 'dims' must be a list of int, got str '1x8x8'
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data and not _has_type(data[f.name], hints[f.name]):
            value = data[f.name]
            raise ValueError(f"{where}: field {f.name!r} must be {_type_text(hints[f.name])}, "
                             f"got {type(value).__name__} {value!r}")


def _has_type(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (tuple, list):
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint in (int, float):
        number = numbers.Integral if hint is int else numbers.Real
        return isinstance(value, number) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_text(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin in (tuple, list):
        return f"a list of {_type_text(args[0])}"
    if origin is dict:
        return "an object"
    return getattr(hint, "__name__", str(hint))
