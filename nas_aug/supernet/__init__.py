"""Supernets: list a model's space, activate a sample, set a mixed forward, extract a standalone
sub-network."""

from .core import (
    activate,
    canonical_sample,
    choice_modules,
    device_of,
    extract_subnet,
    record_input_shapes,
    space_of,
)
from .mixing import mixed, set_mixing

__all__ = ["activate", "canonical_sample", "choice_modules", "device_of", "extract_subnet",
           "mixed", "record_input_shapes", "set_mixing", "space_of"]
