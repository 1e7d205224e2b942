"""The catalogue of search spaces: ``create_space(name, **kw)``, ``list_spaces(pattern)``."""

from . import mobilenet_tiny  # noqa: F401  (registers its spaces)
from ._registry import create_space, list_spaces, register_space

__all__ = ["create_space", "list_spaces", "register_space"]
