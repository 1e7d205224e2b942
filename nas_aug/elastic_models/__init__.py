"""Bring your own model: turn an existing timm model into a weight-sharing supernet whose
largest sub-network is the model itself, with its weights (a warm start for the search).

Families: timm's MobileNetV3 / EfficientNet (:mod:`.efficientnet`) and ResNet
(:mod:`.resnet`); :func:`elasticize` walks any model for their blocks (:mod:`.walker`).
"""

from .spec import ElasticReport, ElasticSpec
from .walker import elasticize

__all__ = ["ElasticReport", "ElasticSpec", "elasticize"]
