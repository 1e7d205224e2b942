"""nas_aug: architecture and augmentation-policy search inside one Lightning fit.

>>> from nas_aug import Budget
>>> Budget(flops=5e6).macs
5000000
"""

from .constraints import Budget, Cost
from .elastic_models import ElasticSpec, elasticize
from .export import Architecture, build_subnet, load_architecture, load_timm

__version__ = "0.1.0"
__all__ = ["Architecture", "Budget", "Cost", "ElasticSpec", "build_subnet", "elasticize",
           "load_architecture", "load_timm"]
