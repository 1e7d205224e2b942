"""Supernets: list a model's space, activate a sample, extract a standalone sub-network."""

from .core import (
    activate,
    canonical_sample,
    choice_modules,
    device_of,
    extract_subnet,
    record_input_shapes,
    space_of,
)

__all__ = ["activate", "canonical_sample", "choice_modules", "device_of", "extract_subnet",
           "record_input_shapes", "space_of"]
