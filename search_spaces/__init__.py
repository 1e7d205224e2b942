"""The catalogue of search spaces: ``create_space(name, **kw)``, ``list_spaces(pattern)``, and
each space's class (``MobileNetTiny``, ``NASBench201``), which a LightningCLI config names as
``class_path``."""

from ._registry import SearchSpace, create_space, list_spaces, register_space
from .mobilenet_tiny import MobileNetTiny
from .nasbench201 import NASBench201

__all__ = ["MobileNetTiny", "NASBench201", "SearchSpace", "create_space", "list_spaces",
           "register_space"]
