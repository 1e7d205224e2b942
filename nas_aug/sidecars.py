"""Files an export writes beside the architecture for another library (timm's definition of
the sub-network, NNI's samples), one registry for all: the export asks each registered
sidecar to write its file and knows none of them. An integration registers its sidecar where
it lives (``nas_aug.elastic_models.timm_export``, ``nas_aug.nni``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from .registry import Registry

if TYPE_CHECKING:
    from .result import SearchResult


@dataclass(frozen=True)
class Sidecar:
    """A file beside the export: ``write(directory, supernet, subnet, result)`` writes
    ``directory / filename`` when the export concerns its library, and nothing otherwise.

    >>> import nas_aug.elastic_models  # registers the timm sidecar (nas_aug.nni: NNI's)
    >>> SIDECARS["timm"].filename
    'timm.json'
    """

    filename: str
    write: Callable[[Path, nn.Module, nn.Module, SearchResult], None]


SIDECARS: Registry[Sidecar] = Registry("export sidecar")
