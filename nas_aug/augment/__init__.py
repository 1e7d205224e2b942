"""Augmentation policies as plain data, applied per sample on the device.

>>> import torch
>>> from nas_aug.augment import OpSpec, Policy, PolicyAugment, RandAugment
>>> policy = Policy([(OpSpec("rotate", 0.8, 0.5), OpSpec("equalize", 0.5, 0.0))], name="mine")
>>> Policy.from_json(policy.to_json()) == policy
True
>>> PolicyAugment(RandAugment(2, 0.3), seed=0)(torch.rand(4, 3, 16, 16)).shape
torch.Size([4, 3, 16, 16])
"""

from .apply import PolicyAugment
from .policy import OpSpec, Policy, RandAugment

__all__ = ["OpSpec", "Policy", "PolicyAugment", "RandAugment"]
