"""The catalogue of search spaces, by name (timm-style registry).

Each space is one :class:`SearchSpace` subclass: its typed constructor is the space's only
definition. ``create_space(name, **kwargs)`` calls it, and a LightningCLI / jsonargparse
config names it as ``class_path`` (``nas_aug.search_spaces.MobileNetTiny``); both give the
same supernet, which remembers ``space_name`` and ``space_kwargs`` so an export rebuilds it.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, ClassVar

from torch import nn

from ..registry import Registry
from ..supernet import SupernetInfo

_SPACES: Registry[type[SearchSpace]] = Registry("space")


def _constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The parameters of ``cls.__init__``, without ``self``."""
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop(next(iter(parameters)), None)  # self
    return parameters


class SearchSpace(nn.Module):
    """The base of the catalogue's supernets. A subclass sets ``name`` (its registry name)
    and ``default_input_shape`` (``(channels, height, width)``), takes its arguments in a
    typed ``__init__`` (JSON data only: they go into the export) and is registered with
    :func:`register_space`.

    An instance remembers ``space_name`` (the class's ``name``) and ``space_kwargs`` (the
    arguments it was built with, as given), however it was built: ``create_space(name, **kw)``,
    ``Cls(**kw)``, or a config's ``class_path`` / ``init_args``; its ``supernet_info`` is the
    :class:`~nas_aug.supernet.SupernetInfo` the callbacks and the export read.

    >>> from nas_aug.search_spaces import MobileNetTiny
    >>> MobileNetTiny(in_chans=1, img_size=8).supernet_info.input_shape
    (1, 8, 8)
    """

    name: ClassVar[str]
    default_input_shape: tuple[int, int, int]

    def __new__(cls, *args: Any, **kwargs: Any):
        # __new__ sees the call's own arguments (not the defaults), before __init__ builds
        # anything; copy/pickle call it with none and then restore the instance's __dict__
        self = super().__new__(cls)
        arguments = inspect.signature(cls.__init__).bind_partial(self, *args, **kwargs).arguments
        arguments.pop(next(iter(arguments)))  # self
        try:
            json.dumps(arguments)
        except TypeError as err:
            raise ValueError(
                f"space arguments must be JSON data (they go into the export): {err}") from None
        object.__setattr__(self, "space_name", getattr(cls, "name", None))
        object.__setattr__(self, "space_kwargs", dict(arguments))
        return self

    @property
    def supernet_info(self) -> SupernetInfo:
        """The supernet's record: from the catalogue, rebuilt by ``space_name`` and
        ``space_kwargs``, for inputs of ``default_input_shape``."""
        return SupernetInfo(origin="catalogue", space_name=self.space_name,
                            space_kwargs=dict(self.space_kwargs),
                            input_shape=tuple(self.default_input_shape))


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Register a :class:`SearchSpace` subclass under its ``name`` (a class decorator).

    Its constructor is what configs name as ``class_path``, so it must take named, typed
    arguments (no ``*args`` / ``**kwargs``); a plain builder function is refused.
    """
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        raise TypeError(
            f"register_space takes a nas_aug.search_spaces.SearchSpace subclass (its typed "
            f"constructor is what create_space calls and what a LightningCLI config names as "
            f"class_path), got {cls!r}; write the builder as `class MySpace(SearchSpace)` with "
            "name = 'my_space' and the builder's arguments, typed, in __init__")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__name__}.name must be the space's registry name (an "
                         f"identifier such as 'mobilenet_tiny'), got {name!r}")
    for parameter in _constructor_parameters(cls).values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{cls.__name__}.__init__ takes *{parameter.name}: a space's "
                            "arguments must be named so that a config can give them")
        if parameter.annotation is parameter.empty:
            raise TypeError(f"{cls.__name__}.__init__ argument {parameter.name!r} has no type "
                            "hint: a config needs one to parse it")
    return _SPACES.add(name, cls)


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names matching a shell-style ``pattern``, sorted."""
    return _SPACES.names(pattern)


def create_space(name: str, **kwargs) -> nn.Module:
    """Build the supernet of space ``name`` (its class's constructor with ``kwargs``). The
    result remembers ``space_name`` and ``space_kwargs`` so an exported architecture can
    rebuild it.

    >>> net = create_space("mobilenet_tiny", num_classes=10, in_chans=1, img_size=8)
    >>> net.space_name, net.default_input_shape, type(net).__name__
    ('mobilenet_tiny', (1, 8, 8), 'MobileNetTiny')
    """
    space = _SPACES.get(name)
    accepted = _constructor_parameters(space)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"space {name!r} got unknown arguments {unknown}; "
                         f"it accepts {list(accepted)}")
    return space(**kwargs)
