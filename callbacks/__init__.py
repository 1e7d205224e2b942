"""The Lightning face of nas_aug: one callback per file."""

from .augment_search import AugmentSearch
from .one_shot_nas import OneShotNAS

__all__ = ["AugmentSearch", "OneShotNAS"]
