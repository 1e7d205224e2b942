"""Choice primitives: labelled values, layer choices, elastic width / kernel / depth."""

from .choice import ComputedChoice, MappedChoice, Sample, Space, ValueChoice, sample_key
from .elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear
from .modules import ChoiceModule, ElasticDepth, LayerChoice

__all__ = [
    "ChoiceModule",
    "ComputedChoice",
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticDepth",
    "ElasticLinear",
    "LayerChoice",
    "MappedChoice",
    "Sample",
    "Space",
    "ValueChoice",
    "sample_key",
]
