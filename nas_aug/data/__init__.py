"""Datasets as LightningDataModules, with a held-out split for the outer loop of a search,
registered by the names recipes use (:data:`DATASETS`)."""

from ..registry import Registry
from .cifar10 import CIFAR10DataModule
from .digits import DigitsDataModule
from .fashion_mnist import FashionMNISTDataModule
from .sampler import EpochSeededSampler

DATASETS: Registry[type] = Registry("dataset")
DATASETS.add("digits", DigitsDataModule)
DATASETS.add("fashion_mnist", FashionMNISTDataModule)
DATASETS.add("cifar10", CIFAR10DataModule)

__all__ = ["DATASETS", "CIFAR10DataModule", "DigitsDataModule", "EpochSeededSampler",
           "FashionMNISTDataModule"]
