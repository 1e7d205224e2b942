"""Bring your own model: turn an existing timm model into a weight-sharing supernet whose
largest sub-network is the model itself, with its weights (a warm start for the search), and
take a searched sub-network back to timm.

Each family is one module holding its conversion rules and its timm export, registered in
:data:`.family.FAMILIES` on import (done here, before any lookup): timm's MobileNetV3 /
EfficientNet (:mod:`.efficientnet`) and ResNet (:mod:`.resnet`). :func:`elasticize` walks any
model for their blocks (:mod:`.walker`); :func:`timm_definition` / :func:`build_timm` write and
build timm's definition of a sub-network (:mod:`.timm_export`). timm's private modules are
reached through :mod:`._timm` only.
"""

from . import efficientnet, resnet  # noqa: F401  (importing a family registers it)
from .spec import ElasticReport, ElasticSpec
from .timm_export import build_timm, timm_definition
from .walker import elasticize

__all__ = ["ElasticReport", "ElasticSpec", "build_timm", "elasticize", "timm_definition"]
