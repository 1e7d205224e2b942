"""The record a timm model family registers (:class:`Family`: how to make its blocks elastic
and how to write a sub-network back as timm's definition), and the registry of them.

A family is one module that builds its ``Family`` and passes it to :func:`register`; the
walker and the timm export iterate :data:`FAMILIES` and never name a family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..registry import Registry
from .spec import ElasticSpec

# convert(name, block, spec) makes the block elastic in place and returns (labels, problems)
Convert = Callable[[str, nn.Module, ElasticSpec], tuple[list[str], list[str]]]
# definition(model): timm's definition of a model of the family, as plain JSON data
# ("model", "kwargs", "block_args", "norm_layer", "se_layer"); ValueError says why not
Definition = Callable[[nn.Module], dict[str, Any]]
# build(model class, kwargs with act_layer / norm_layer resolved, definition): the timm model
Build = Callable[[type[nn.Module], dict[str, Any], Mapping[str, Any]], nn.Module]


@dataclass(frozen=True)
class BlockRule:
    """How to make one block type elastic, and whether a block keeps its input's shape (so a
    stage may skip it)."""

    convert: Convert
    keeps_shape: Callable[[nn.Module], bool]


@dataclass(frozen=True)
class Family:
    """A model family: the block types it converts and those it knows but cannot convert;
    the timm model classes it exports, with the writer and builder of their definitions."""

    name: str
    blocks: dict[type, BlockRule]
    models: tuple[type[nn.Module], ...]
    definition: Definition
    build: Build
    unsupported: dict[type, str] = field(default_factory=dict)


FAMILIES: Registry[Family] = Registry("timm family")
# timm model class name -> class, over every registered family (a definition's "model")
MODELS: dict[str, type[nn.Module]] = {}


def register(family: Family) -> Family:
    """Register ``family`` under its name, and its model classes in :data:`MODELS`."""
    taken = [model.__name__ for model in family.models if model.__name__ in MODELS]
    if taken:
        raise ValueError(f"timm family {family.name!r} exports {taken}, which another "
                         "registered family already exports")
    FAMILIES.register(family.name)(family)
    MODELS.update((model.__name__, model) for model in family.models)
    return family


def families() -> list[Family]:
    """The registered families, in name order."""
    return [FAMILIES.get(name) for name in FAMILIES]


def family_of(model: str) -> Family:
    """The registered family exporting timm's model class named ``model``."""
    if model not in MODELS:
        raise ValueError(f"timm definition of an unknown model {model!r}; known: "
                         f"{sorted(MODELS)}")
    return next(family for family in families() if MODELS[model] in family.models)
