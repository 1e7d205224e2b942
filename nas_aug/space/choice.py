"""The space algebra: labelled choices, samples and spaces. Knows nothing of torch.

A *sample* is a plain ``{label: value}`` dict. Labels are the contract between the space,
checkpoints, exports and logs.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from ..validation import closest_match

Sample = dict[str, Any]


class ValueChoice:
    """A labelled choice among candidate values, listed from smallest to largest.

    Numeric candidates are sorted; other candidates keep the order given, so the first is the
    "smallest" (cheapest) and the last the "largest".

    >>> kernel = ValueChoice("stage1.kernel", [5, 3, 7])
    >>> kernel.candidates
    (3, 5, 7)
    >>> kernel.resolve({"stage1.kernel": 5})
    5
    >>> kernel.map(lambda k: k // 2).resolve({"stage1.kernel": 5})
    2
    """

    def __init__(self, label: str, candidates: Sequence[Hashable]):
        if not isinstance(label, str) or not label:
            raise ValueError(f"a choice label must be a non-empty string, got {label!r}")
        values = list(candidates)
        if not values:
            raise ValueError(f"choice {label!r} needs at least one candidate, got {candidates!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"choice {label!r} has repeated candidates: {values!r}")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            values.sort()
        self.label = label
        self.candidates: tuple = tuple(values)

    def resolve(self, sample: Mapping[str, Any]) -> Any:
        """The value this choice takes in ``sample``."""
        return sample[self.label]

    def map(self, fn: Callable[[Any], Any]) -> MappedChoice:
        """A choice derived from this one: same label, values transformed by ``fn``."""
        return MappedChoice(self, fn)

    def __repr__(self) -> str:
        return f"ValueChoice({self.label!r}, {list(self.candidates)!r})"


class MappedChoice:
    """A value computed from another choice (e.g. channels from an expand ratio).

    >>> expand = ValueChoice("b0.expand", [3, 6])
    >>> hidden = expand.map(lambda e: 16 * e)
    >>> hidden.label, hidden.candidates, hidden.resolve({"b0.expand": 6})
    ('b0.expand', (48, 96), 96)
    """

    def __init__(self, source: ValueChoice, fn: Callable[[Any], Any]):
        self.source = source
        self.fn = fn

    @property
    def label(self) -> str:
        return self.source.label

    @property
    def candidates(self) -> tuple:
        return tuple(self.fn(v) for v in self.source.candidates)

    def resolve(self, sample: Mapping[str, Any]) -> Any:
        return self.fn(self.source.resolve(sample))

    def __repr__(self) -> str:
        return f"MappedChoice({self.source!r})"


class ComputedChoice:
    """A value computed from several choices (e.g. channels from a width multiplier and an
    expand ratio); its candidates are the distinct values over every combination.

    >>> mult, expand = ValueChoice("mult", [0.5, 1.0]), ValueChoice("expand", [3, 6])
    >>> hidden = ComputedChoice([mult, expand], lambda m, e: int(16 * m * e))
    >>> hidden.labels, hidden.candidates, hidden.resolve({"mult": 0.5, "expand": 6})
    (('mult', 'expand'), (24, 48, 96), 48)
    """

    def __init__(self, sources: Sequence[ValueChoice], fn: Callable[..., Any]):
        self.sources = tuple(sources)
        self.fn = fn

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(source.label for source in self.sources)

    @property
    def candidates(self) -> tuple:
        combos = itertools.product(*(source.candidates for source in self.sources))
        return tuple(sorted({self.fn(*combo) for combo in combos}))

    def resolve(self, sample: Mapping[str, Any]) -> Any:
        return self.fn(*(source.resolve(sample) for source in self.sources))

    def __repr__(self) -> str:
        return f"ComputedChoice({list(self.sources)!r})"


def is_choice(value: Any) -> bool:
    """Whether ``value`` is a choice (its value depends on a sample)."""
    return isinstance(value, (ValueChoice, MappedChoice, ComputedChoice))


def resolve(value: Any, sample: Mapping[str, Any]) -> Any:
    """``value`` under ``sample`` if it is a choice, else ``value`` itself."""
    return value.resolve(sample) if is_choice(value) else value


def largest_value(value: Any) -> Any:
    """The largest candidate of a numeric choice, or ``value`` itself if it is fixed."""
    return max(value.candidates) if is_choice(value) else value


class Space:
    """A set of independent labelled choices: lists, samples, validates and mutates samples.

    >>> space = Space([ValueChoice("depth", [1, 2]), ValueChoice("kernel", [3, 5, 7])])
    >>> space.labels, len(space)
    (('depth', 'kernel'), 6)
    >>> space.smallest(), space.largest()
    ({'depth': 1, 'kernel': 3}, {'depth': 2, 'kernel': 7})
    >>> space.validate({"depth": 2, "kernel": 5})
    {'depth': 2, 'kernel': 5}
    """

    def __init__(self, choices: Iterable[ValueChoice]):
        self._choices: dict[str, ValueChoice] = {}
        for choice in choices:
            known = self._choices.get(choice.label)
            if known is not None and known.candidates != choice.candidates:
                raise ValueError(
                    f"label {choice.label!r} is used with different candidates: "
                    f"{list(known.candidates)} and {list(choice.candidates)}"
                )
            self._choices.setdefault(choice.label, choice)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._choices)

    def candidates(self, label: str) -> tuple:
        if label not in self._choices:
            raise KeyError(f"unknown label {label!r}{closest_match(label, self._choices)}; "
                           f"labels are {list(self._choices)}")
        return self._choices[label].candidates

    @property
    def size(self) -> int:
        """Number of distinct samples (labels are independent, so a product); may exceed what
        ``len()`` can return (NNI's MobileNetV3 space has about 10**40)."""
        return math.prod(len(c.candidates) for c in self._choices.values())

    def __len__(self) -> int:
        return self.size

    def __contains__(self, label: object) -> bool:
        return label in self._choices

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={list(c.candidates)}" for k, c in self._choices.items())
        return f"Space({body})"

    def random(self, rng: random.Random) -> Sample:
        return {label: rng.choice(c.candidates) for label, c in self._choices.items()}

    def smallest(self) -> Sample:
        return {label: c.candidates[0] for label, c in self._choices.items()}

    def largest(self) -> Sample:
        return {label: c.candidates[-1] for label, c in self._choices.items()}

    def validate(self, sample: Mapping[str, Any]) -> Sample:
        """Return ``sample`` as a dict if it sets every label to one of its candidates.

        Raises ``ValueError`` naming missing, unknown and out-of-range labels.
        """
        if not isinstance(sample, Mapping):
            raise ValueError(f"a sample is a {{label: value}} dict, got {type(sample).__name__}")
        problems = []
        missing = [k for k in self._choices if k not in sample]
        if missing:
            problems.append(f"missing labels {missing}")
        for key in sample:
            if key not in self._choices:
                problems.append(f"unknown label {key!r}{closest_match(key, self._choices)}")
            elif not _is_candidate(sample[key], self._choices[key].candidates):
                problems.append(f"{key}={sample[key]!r} is not one of "
                                f"{list(self._choices[key].candidates)}")
        if problems:
            raise ValueError("invalid sample: " + "; ".join(problems) + f". The space is {self!r}")
        return {k: sample[k] for k in self._choices}

    def mutate(self, sample: Mapping[str, Any], prob: float, rng: random.Random) -> Sample:
        """Resample each label with probability ``prob`` (to a different value if possible)."""
        out = dict(sample)
        for label, choice in self._choices.items():
            if len(choice.candidates) > 1 and rng.random() < prob:
                out[label] = rng.choice([v for v in choice.candidates if v != sample[label]])
        return out

    def neighbours(self, sample: Mapping[str, Any]) -> list[Sample]:
        """Every sample that differs from ``sample`` in exactly one label, in label order.

        >>> Space([ValueChoice("k", [3, 5]), ValueChoice("e", [1, 2, 4])]).neighbours(
        ...     {"k": 3, "e": 2})
        [{'k': 5, 'e': 2}, {'k': 3, 'e': 1}, {'k': 3, 'e': 4}]
        """
        return [{**sample, label: value} for label, choice in self._choices.items()
                for value in choice.candidates if value != sample[label]]

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], rng: random.Random) -> Sample:
        """Each label's value taken from ``a`` or ``b`` with equal chance."""
        return {label: (a if rng.random() < 0.5 else b)[label] for label in self._choices}


def _is_candidate(value: Any, candidates: tuple) -> bool:
    """Membership without ``True == 1``: a bool matches only a bool."""
    return any(value == c and isinstance(value, bool) == isinstance(c, bool)
               for c in candidates)


def sample_key(sample: Mapping[str, Any]) -> str:
    """A stable, hashable text key for a sample (labels sorted)."""
    return ";".join(f"{k}={sample[k]!r}" for k in sorted(sample))
