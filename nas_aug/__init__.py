"""nas_aug: architecture and augmentation-policy search inside one Lightning fit."""

__version__ = "0.1.0"
