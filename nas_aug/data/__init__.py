"""Datasets as LightningDataModules, with a held-out split for the outer loop of a search."""

from nas_aug.data.digits import DigitsDataModule
from nas_aug.data.sampler import EpochSeededSampler

__all__ = ["DigitsDataModule", "EpochSeededSampler"]
