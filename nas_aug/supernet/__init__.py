"""Supernets: list a model's space, activate a sample, set a mixed forward, extract a standalone
sub-network."""

from .core import (
    activate,
    canonical_sample,
    choice_modules,
    device_of,
    extract_subnet,
    input_of,
    outputs_of,
    record_input_shapes,
    space_of,
)
from .mixing import mixed, set_mixing, unmixable
from .record import SupernetInfo, find_supernet, mark_supernet, supernet_info

__all__ = ["SupernetInfo", "activate", "canonical_sample", "choice_modules", "device_of",
           "extract_subnet", "find_supernet", "input_of", "mark_supernet", "mixed",
           "outputs_of", "record_input_shapes", "set_mixing", "space_of", "supernet_info",
           "unmixable"]
