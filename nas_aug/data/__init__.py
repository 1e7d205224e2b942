"""Datasets as LightningDataModules, with a held-out split for the outer loop of a search."""

from nas_aug.data.cifar10 import CIFAR10DataModule
from nas_aug.data.digits import DigitsDataModule
from nas_aug.data.fashion_mnist import FashionMNISTDataModule
from nas_aug.data.sampler import EpochSeededSampler

__all__ = ["CIFAR10DataModule", "DigitsDataModule", "EpochSeededSampler", "FashionMNISTDataModule"]
