"""Augmentation policies as plain data, applied per sample on the device, and exported.

>>> import torch
>>> from nas_aug.augment import OpSpec, Policy, PolicyAugment, RandAugment, to_kornia
>>> policy = Policy([(OpSpec("rotate", 0.8, 0.5), OpSpec("equalize", 0.5, 0.0))], name="mine")
>>> Policy.from_json(policy.to_json()) == policy
True
>>> PolicyAugment(RandAugment(2, 0.3), seed=0)(torch.rand(4, 3, 16, 16)).shape
torch.Size([4, 3, 16, 16])
>>> to_kornia(policy)(torch.rand(4, 3, 16, 16)).shape
torch.Size([4, 3, 16, 16])
"""

from .apply import PolicyAugment
from .export import load_policy, save_policy, to_albumentations, to_kornia
from .policy import OpSpec, Policy, RandAugment

__all__ = ["OpSpec", "Policy", "PolicyAugment", "RandAugment", "load_policy", "save_policy",
           "to_albumentations", "to_kornia"]
