"""The catalogue of search spaces, by name (timm-style registry)."""

from __future__ import annotations

import fnmatch
import inspect
import json
from collections.abc import Callable

from torch import nn

from ..validation import closest_match

_SPACES: dict[str, Callable[..., nn.Module]] = {}


def register_space(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder ``fn(**kwargs) -> supernet`` under its function name."""
    if fn.__name__ in _SPACES:
        raise ValueError(f"a space named {fn.__name__!r} is already registered")
    _SPACES[fn.__name__] = fn
    return fn


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _SPACES if fnmatch.fnmatch(n, pattern))


def create_space(name: str, **kwargs) -> nn.Module:
    """Build the supernet of space ``name``. The result remembers ``space_name`` and
    ``space_kwargs`` so an exported architecture can rebuild it.

    >>> net = create_space("mobilenet_tiny", num_classes=10, in_chans=1, img_size=8)
    >>> net.space_name, net.default_input_shape
    ('mobilenet_tiny', (1, 8, 8))
    """
    if name not in _SPACES:
        raise ValueError(f"unknown space {name!r}{closest_match(name, _SPACES)}; "
                         f"registered spaces are {list_spaces()}")
    builder = _SPACES[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"space {name!r} got unknown arguments {unknown}; "
                         f"it accepts {list(accepted)}")
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise ValueError(
            f"space arguments must be JSON data (they go into the export): {err}") from None
    model = builder(**kwargs)
    model.space_name = name
    model.space_kwargs = dict(kwargs)
    return model
