"""Augmentation policies as plain data: named ops, sub-policies, presets, JSON round trip.

A :class:`Policy` holds sub-policies, each an ordered tuple of :class:`OpSpec`. Every sample
draws ``draws_per_sample`` sub-policies uniformly (with replacement) and runs their ops in
order, each op with its own probability. That one shape covers the published methods:

* AutoAugment: 25 two-op sub-policies, one drawn per sample;
* RandAugment(N, M): one single-op sub-policy per op, probability 1, N drawn per sample;
* TrivialAugment: one single-op sub-policy per (op, magnitude bin), one drawn per sample, so the
  op and its magnitude are both uniform.

Fixed ops may run ``before`` and ``after`` the drawn sub-policies: :meth:`Policy.within_base`
puts a policy inside the papers' standard pipeline (random crop with padding and horizontal
flip, then the policy, then Cutout); the preset ``crop_flip`` is that base alone.

The AutoAugment tables are the paper's (as torchvision's ``AutoAugmentPolicy`` lists them); their
magnitude bins 0..9 become ``bin / 9`` on our ``[0, 1]`` scale, torchvision's convention. Ops
without a magnitude (``equalize``, ...) carry magnitude 0.

>>> policy = Policy.preset("autoaugment_cifar10")
>>> len(policy.sub_policies)
25
>>> policy.sub_policies[1][1]  # ("TranslateX", 0.3, 9) in the paper
OpSpec(name='translate_x', probability=0.3, magnitude=1.0)
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..validation import check_int
from .ops import OP_SUBSETS, OPS, RANDAUGMENT_OPS, get_op, suggest

__all__ = ["PRESETS", "OpSpec", "Policy", "RandAugment", "SubPolicy"]


def _unit_interval(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r} "
                         f"({type(value).__name__})")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be in [0, 1], got {value!r}")
    return value


@dataclass(frozen=True)
class OpSpec:
    """One op of a sub-policy: which op, how likely it is applied, and how strongly.

    ``probability`` and ``magnitude`` lie in ``[0, 1]``; magnitude 1 is the op's strongest
    setting (see :mod:`nas_aug.augment.ops`); ops without a magnitude ignore it.

    >>> OpSpec("rotate", probability=0.5, magnitude=1.0)
    OpSpec(name='rotate', probability=0.5, magnitude=1.0)
    >>> OpSpec("rotat", 0.5, 1.0)
    Traceback (most recent call last):
    ...
    ValueError: unknown augmentation op 'rotat' (did you mean 'rotate'?); valid ops are [...]
    """

    name: str
    probability: float
    magnitude: float

    def __post_init__(self) -> None:
        get_op(self.name)
        object.__setattr__(self, "probability",
                           _unit_interval(f"probability of op {self.name!r}", self.probability))
        object.__setattr__(self, "magnitude",
                           _unit_interval(f"magnitude of op {self.name!r}", self.magnitude))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "probability": self.probability, "magnitude": self.magnitude}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpSpec:
        _check_keys("op", data, ("name", "probability", "magnitude"))
        return cls(data["name"], data["probability"], data["magnitude"])


SubPolicy = tuple[OpSpec, ...]


def _check_keys(what: str, data: Any, keys: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be a mapping with keys {list(keys + optional)}, "
                         f"got {data!r} ({type(data).__name__})")
    for key in data:
        if key not in keys + optional:
            raise ValueError(f"unknown key {key!r} in {what}{suggest(str(key), keys + optional)}; "
                             f"valid keys are {list(keys + optional)}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"{what} lacks key(s) {missing}; got {list(data)}")


def _sub_policy(what: str, ops: Any, empty: bool = False) -> SubPolicy:
    if isinstance(ops, OpSpec) or not isinstance(ops, (tuple, list)):
        raise ValueError(f"{what} must be a tuple of OpSpec, got {ops!r}")
    if not ops and not empty:
        raise ValueError(f"{what} is empty; use OpSpec('identity', 1.0, 0.0) "
                         "for a sub-policy that does nothing")
    for op in ops:
        if not isinstance(op, OpSpec):
            raise ValueError(f"{what} holds {op!r} ({type(op).__name__}); write "
                             "each op as OpSpec(name, probability, magnitude)")
    return tuple(ops)


def _fraction(what: str, op: str, value: Any) -> float:
    """A fraction of the image side for ``op``, within the op's range."""
    low, high = OPS[op].value_range
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{what} must be a fraction of the image side in [{low:g}, {high:g}], "
                         f"got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Policy:
    """An augmentation policy: sub-policies of named ops, as plain data.

    Each sample draws ``draws_per_sample`` sub-policies uniformly with replacement and applies
    their ops in order, after the ops of ``before`` and before those of ``after`` (each op with
    its probability). ``to_json`` / ``from_json`` convert to and from plain dicts and lists.

    >>> policy = Policy([(OpSpec("invert", 0.5, 0.0), OpSpec("rotate", 1.0, 0.5)),
    ...                  (OpSpec("equalize", 1.0, 0.0),)], name="mine")
    >>> len(policy.sub_policies), policy.op_names
    (2, ('invert', 'rotate', 'equalize'))
    >>> Policy.from_json(policy.to_json()) == policy
    True
    >>> Policy.presets()[3:]  # after the three AutoAugment tables
    ('crop_flip', 'none', 'trivialaugment')
    """

    sub_policies: tuple[SubPolicy, ...]
    name: str = "custom"
    draws_per_sample: int = 1
    before: SubPolicy = ()
    after: SubPolicy = ()

    def __post_init__(self) -> None:
        subs = self.sub_policies
        if isinstance(subs, (str, bytes, Mapping)) or not isinstance(subs, (tuple, list)):
            raise ValueError(f"sub_policies must be a list of sub-policies (tuples of OpSpec), "
                             f"got {subs!r}")
        if not subs:
            raise ValueError("a policy needs at least one sub-policy, got none")
        object.__setattr__(self, "sub_policies",
                           tuple(_sub_policy(f"sub-policy {i}", ops) for i, ops in enumerate(subs)))
        for key in ("before", "after"):
            object.__setattr__(self, key, _sub_policy(f"policy {key!r}", getattr(self, key),
                                                      empty=True))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"policy name must be a non-empty string, got {self.name!r}")
        draws = self.draws_per_sample
        object.__setattr__(self, "draws_per_sample", check_int("draws_per_sample", draws, 1))

    @property
    def op_names(self) -> tuple[str, ...]:
        """The distinct ops the policy uses, in order of first appearance."""
        return tuple(dict.fromkeys(op.name for op in self.specs))

    @property
    def specs(self) -> tuple[OpSpec, ...]:
        """Every op of the policy, ``before`` and ``after`` included."""
        return tuple(op for ops in (self.before, *self.sub_policies, self.after) for op in ops)

    @property
    def max_ops(self) -> int:
        """The length of the longest sub-policy (``before`` and ``after`` count as ones)."""
        return max(len(ops) for ops in (self.before, *self.sub_policies, self.after))

    def within_base(self, padding: float = 0.125, flip: float = 0.5,
                    cutout: float = 0.5) -> Policy:
        """This policy inside the papers' standard pipeline: random crop with ``padding`` (a
        fraction of the side; CIFAR's 4 of 32 pixels) and a horizontal flip with probability
        ``flip`` before it, Cutout of ``cutout`` of the side (CIFAR-10's 16 of 32) after it.
        ``0`` leaves a step out.

        >>> policy = Policy.preset("trivialaugment").within_base()
        >>> policy.name, [op.name for op in policy.before], [op.name for op in policy.after]
        ('trivialaugment+base', ['crop', 'hflip'], ['cutout'])
        >>> Policy.preset("none").within_base(padding=0.5)
        Traceback (most recent call last):
        ...
        ValueError: crop padding must be a fraction of the image side in [0, 0.25], got 0.5
        """
        if self.before or self.after:
            raise ValueError(f"policy {self.name!r} already runs ops before or after its "
                             "sub-policies; within_base puts a policy without them inside the "
                             "base pipeline")
        padding = _fraction("crop padding", "crop", padding)
        cutout = _fraction("cutout size", "cutout", cutout)
        flip = _unit_interval("flip probability", flip)
        before = ((OpSpec("crop", 1.0, padding / OPS["crop"].value_range[1]),) if padding else ())
        before += (OpSpec("hflip", flip, 0.0),) if flip else ()
        after = (OpSpec("cutout", 1.0, cutout / OPS["cutout"].value_range[1]),) if cutout else ()
        return Policy(self.sub_policies, f"{self.name}+base", self.draws_per_sample, before,
                      after)

    def to_json(self) -> dict[str, Any]:
        """Plain data (dicts, lists, strings, numbers) for ``json.dumps``."""
        data = {"name": self.name, "draws_per_sample": self.draws_per_sample,
                "sub_policies": [[op.to_json() for op in ops] for ops in self.sub_policies]}
        for key in ("before", "after"):
            if getattr(self, key):
                data[key] = [op.to_json() for op in getattr(self, key)]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> Policy:
        """The policy ``to_json`` wrote (a dict, or its JSON text)."""
        if isinstance(data, str):
            data = json.loads(data)
        _check_keys("policy", data, ("sub_policies",),
                    ("name", "draws_per_sample", "before", "after"))
        subs = data["sub_policies"]
        if not isinstance(subs, list):
            raise ValueError(f"policy 'sub_policies' must be a list, got {subs!r}")

        def ops_of(what: str, ops: Any) -> SubPolicy:
            if not isinstance(ops, list):
                raise ValueError(f"{what} must be a list of ops, got {ops!r}")
            return tuple(OpSpec.from_json(op) for op in ops)

        return cls(tuple(ops_of(f"sub-policy {i}", ops) for i, ops in enumerate(subs)),
                   name=data.get("name", "custom"),
                   draws_per_sample=data.get("draws_per_sample", 1),
                   before=ops_of("policy 'before'", data.get("before", [])),
                   after=ops_of("policy 'after'", data.get("after", [])))

    @staticmethod
    def presets() -> tuple[str, ...]:
        return tuple(PRESETS)

    @classmethod
    def preset(cls, name: str) -> Policy:
        """A published policy by name; see :meth:`presets`. For RandAugment see :func:`RandAugment`.

        >>> Policy.preset("trivialaugment").op_names == RANDAUGMENT_OPS
        True
        """
        if not isinstance(name, str) or name not in PRESETS:
            hint = suggest(name, PRESETS) if isinstance(name, str) else ""
            extra = " (RandAugment(num_ops, magnitude) builds RandAugment)" \
                if isinstance(name, str) and "rand" in name.lower() else ""
            raise ValueError(f"unknown policy preset {name!r}{hint}; presets are "
                             f"{list(PRESETS)}{extra}")
        return PRESETS[name]()


def RandAugment(num_ops: int = 2, magnitude: float = 0.3,  # noqa: N802 - a policy kind
                ops: str = "all") -> Policy:
    """RandAugment (Cubuk et al. 2020): each sample applies ``num_ops`` ops drawn uniformly.

    The ops (with replacement, as the paper and torchvision do) come from the paper's 14, or
    from one of the named subsets of ``OP_SUBSETS`` (``"geometric"``, ``"photometric"``), and
    all use one ``magnitude`` in ``[0, 1]``; the paper's ``M`` of 30 is ``M / 30`` here, so
    torchvision's default ``RandAugment(num_ops=2, magnitude=9)`` is ``RandAugment(2, 0.3)``.

    >>> policy = RandAugment(num_ops=2, magnitude=0.3)
    >>> policy.name, policy.draws_per_sample, len(policy.sub_policies)
    ('randaugment', 2, 14)
    >>> policy.sub_policies[3]
    (OpSpec(name='rotate', probability=1.0, magnitude=0.3),)
    >>> RandAugment(1, 0.5, ops="geometric").op_names
    ('identity', 'rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y')
    """
    check_int("RandAugment num_ops", num_ops, 1)
    magnitude = _unit_interval("RandAugment magnitude", magnitude)
    if not isinstance(ops, str) or ops not in OP_SUBSETS:
        hint = suggest(ops, OP_SUBSETS) if isinstance(ops, str) else ""
        raise ValueError(f"unknown RandAugment op subset {ops!r}{hint}; subsets are "
                         f"{list(OP_SUBSETS)}")
    return Policy(tuple((OpSpec(name, 1.0, magnitude),) for name in OP_SUBSETS[ops]),
                  name="randaugment" if ops == "all" else f"randaugment_{ops}",
                  draws_per_sample=int(num_ops))


# (op, probability, magnitude bin 0..9 or None), as published in the AutoAugment paper
_AUTOAUGMENT_TABLES: dict[str, list[tuple[tuple[str, float, int | None], ...]]] = {
    "imagenet": [
        (("posterize", 0.4, 8), ("rotate", 0.6, 9)),
        (("solarize", 0.6, 5), ("auto_contrast", 0.6, None)),
        (("equalize", 0.8, None), ("equalize", 0.6, None)),
        (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
        (("equalize", 0.4, None), ("solarize", 0.2, 4)),
        (("equalize", 0.4, None), ("rotate", 0.8, 8)),
        (("solarize", 0.6, 3), ("equalize", 0.6, None)),
        (("posterize", 0.8, 5), ("equalize", 1.0, None)),
        (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
        (("equalize", 0.6, None), ("posterize", 0.4, 6)),
        (("rotate", 0.8, 8), ("color", 0.4, 0)),
        (("rotate", 0.4, 9), ("equalize", 0.6, None)),
        (("equalize", 0.0, None), ("equalize", 0.8, None)),
        (("invert", 0.6, None), ("equalize", 1.0, None)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("rotate", 0.8, 8), ("color", 1.0, 2)),
        (("color", 0.8, 8), ("solarize", 0.8, 7)),
        (("sharpness", 0.4, 7), ("invert", 0.6, None)),
        (("shear_x", 0.6, 5), ("equalize", 1.0, None)),
        (("color", 0.4, 0), ("equalize", 0.6, None)),
        (("equalize", 0.4, None), ("solarize", 0.2, 4)),
        (("solarize", 0.6, 5), ("auto_contrast", 0.6, None)),
        (("invert", 0.6, None), ("equalize", 1.0, None)),
        (("color", 0.6, 4), ("contrast", 1.0, 8)),
        (("equalize", 0.8, None), ("equalize", 0.6, None)),
    ],
    "cifar10": [
        (("invert", 0.1, None), ("contrast", 0.2, 6)),
        (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
        (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
        (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
        (("auto_contrast", 0.5, None), ("equalize", 0.9, None)),
        (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
        (("color", 0.4, 3), ("brightness", 0.6, 7)),
        (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
        (("equalize", 0.6, None), ("equalize", 0.5, None)),
        (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
        (("color", 0.7, 7), ("translate_x", 0.5, 8)),
        (("equalize", 0.3, None), ("auto_contrast", 0.4, None)),
        (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
        (("brightness", 0.9, 6), ("color", 0.2, 8)),
        (("solarize", 0.5, 2), ("invert", 0.0, None)),
        (("equalize", 0.2, None), ("auto_contrast", 0.6, None)),
        (("equalize", 0.2, None), ("equalize", 0.6, None)),
        (("color", 0.9, 9), ("equalize", 0.6, None)),
        (("auto_contrast", 0.8, None), ("solarize", 0.2, 8)),
        (("brightness", 0.1, 3), ("color", 0.7, 0)),
        (("solarize", 0.4, 5), ("auto_contrast", 0.9, None)),
        (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
        (("auto_contrast", 0.9, None), ("solarize", 0.8, 3)),
        (("equalize", 0.8, None), ("invert", 0.1, None)),
        (("translate_y", 0.7, 9), ("auto_contrast", 0.9, None)),
    ],
    "svhn": [
        (("shear_x", 0.9, 4), ("invert", 0.2, None)),
        (("shear_y", 0.9, 8), ("invert", 0.7, None)),
        (("equalize", 0.6, None), ("solarize", 0.6, 6)),
        (("invert", 0.9, None), ("equalize", 0.6, None)),
        (("equalize", 0.6, None), ("rotate", 0.9, 3)),
        (("shear_x", 0.9, 4), ("auto_contrast", 0.8, None)),
        (("shear_y", 0.9, 8), ("invert", 0.4, None)),
        (("shear_y", 0.9, 5), ("solarize", 0.2, 6)),
        (("invert", 0.9, None), ("auto_contrast", 0.8, None)),
        (("equalize", 0.6, None), ("rotate", 0.9, 3)),
        (("shear_x", 0.9, 4), ("solarize", 0.3, 3)),
        (("shear_y", 0.8, 8), ("invert", 0.7, None)),
        (("equalize", 0.9, None), ("translate_y", 0.6, 6)),
        (("invert", 0.9, None), ("equalize", 0.6, None)),
        (("contrast", 0.3, 3), ("rotate", 0.8, 4)),
        (("invert", 0.8, None), ("translate_y", 0.0, 2)),
        (("shear_y", 0.7, 6), ("solarize", 0.4, 8)),
        (("invert", 0.6, None), ("rotate", 0.8, 4)),
        (("shear_y", 0.3, 7), ("translate_x", 0.9, 3)),
        (("shear_x", 0.1, 6), ("invert", 0.6, None)),
        (("solarize", 0.7, 2), ("translate_y", 0.6, 7)),
        (("shear_y", 0.8, 4), ("invert", 0.8, None)),
        (("shear_x", 0.7, 9), ("translate_y", 0.8, 3)),
        (("shear_y", 0.8, 5), ("auto_contrast", 0.7, None)),
        (("shear_x", 0.7, 2), ("invert", 0.1, None)),
    ],
}
AUTOAUGMENT_BINS = 10
TRIVIALAUGMENT_BINS = 31


def _autoaugment(dataset: str) -> Policy:
    last = AUTOAUGMENT_BINS - 1
    return Policy(tuple(tuple(OpSpec(name, p, 0.0 if b is None else b / last) for name, p, b in ops)
                        for ops in _AUTOAUGMENT_TABLES[dataset]),
                  name=f"autoaugment_{dataset}")


def _no_augmentation() -> Policy:
    return Policy(((OpSpec("identity", 1.0, 0.0),),), name="none")


def _trivialaugment() -> Policy:
    # one sub-policy per (op, bin): a uniform draw picks op and magnitude independently; ops
    # without a magnitude get as many (identical) entries, so every op is equally likely
    last = TRIVIALAUGMENT_BINS - 1
    return Policy(tuple((OpSpec(name, 1.0, b / last),) if get_op(name).has_magnitude
                        else (OpSpec(name, 1.0, 0.0),)
                        for name in RANDAUGMENT_OPS for b in range(TRIVIALAUGMENT_BINS)),
                  name="trivialaugment")


PRESETS = {
    "autoaugment_cifar10": lambda: _autoaugment("cifar10"),
    "autoaugment_imagenet": lambda: _autoaugment("imagenet"),
    "autoaugment_svhn": lambda: _autoaugment("svhn"),
    # the standard pipeline's base alone: crop with padding and flip, no Cutout
    "crop_flip": lambda: dataclasses.replace(_no_augmentation().within_base(cutout=0.0),
                                             name="crop_flip"),
    "none": _no_augmentation,  # the images as they are: the baseline every search must beat
    "trivialaugment": _trivialaugment,
}
