"""The Lightning face of nas_aug: one callback per file."""

from .one_shot_nas import OneShotNAS

__all__ = ["OneShotNAS"]
