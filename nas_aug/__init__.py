"""nas_aug: architecture and augmentation-policy search inside one Lightning fit.

>>> from nas_aug import Budget
>>> Budget(flops=5e6).macs
5000000
"""

from .constraints import Budget, Cost
from .export import Architecture, build_subnet, load_architecture, load_timm

__version__ = "0.1.0"
__all__ = ["Architecture", "Budget", "Cost", "ElasticSpec", "build_subnet", "elasticize",
           "load_architecture", "load_timm"]
_TIMM_NAMES = ("ElasticSpec", "elasticize")  # from nas_aug.elastic_models, which imports timm


def __getattr__(name: str):
    """``ElasticSpec`` and ``elasticize``, imported on first use (timm comes with them)."""
    if name in _TIMM_NAMES:
        from . import elastic_models

        return getattr(elastic_models, name)
    raise AttributeError(f"module 'nas_aug' has no attribute {name!r}")
