"""The catalogue of search spaces: ``create_space(name, **kw)``, ``list_spaces(pattern)``, and
each space's class (``MobileNetTiny``), which a LightningCLI config names as ``class_path``."""

from ._registry import SearchSpace, create_space, list_spaces, register_space
from .mobilenet_tiny import MobileNetTiny

__all__ = ["MobileNetTiny", "SearchSpace", "create_space", "list_spaces", "register_space"]
