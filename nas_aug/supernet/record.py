"""One typed record of what a supernet is, kept on the model as timm keeps one
``pretrained_cfg``: where it came from (the catalogue, an elasticized timm model, a converted
NNI space, or the user's own choice modules), how to rebuild it, its input shape.

``create_space`` (every :class:`~nas_aug.search_spaces.SearchSpace`), ``elasticize`` and
``nas_aug.nni.from_nni`` set it; the callbacks, the mixing probe and the export read it and
nothing else.

>>> from torch import nn
>>> net = nn.Linear(4, 2)
>>> mark_supernet(net, SupernetInfo(origin="custom", input_shape=(4,)))
>>> supernet_info(net).input_shape, find_supernet(nn.Sequential(nn.ReLU(), net)) is net
((4,), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

ORIGINS = ("catalogue", "timm", "nni", "custom")
ATTRIBUTE = "supernet_info"


@dataclass(frozen=True)
class SupernetInfo:
    """What a supernet is: its ``origin`` (one of :data:`ORIGINS`); for the catalogue, the
    registered ``space_name`` and the ``space_kwargs`` that rebuild it; the
    ``input_shape`` (channels, height, width) it is built for, where known; and ``labels``,
    the labels of the origin's own space (an NNI space's), where the origin has one.

    >>> SupernetInfo(origin="notebook")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: SupernetInfo origin must be one of ['catalogue', ...], got 'notebook'
    """

    origin: str = "custom"
    space_name: str | None = None
    space_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    labels: tuple[str, ...] = ()

    def __post_init__(self):
        if self.origin not in ORIGINS:
            raise ValueError(f"SupernetInfo origin must be one of {list(ORIGINS)}, "
                             f"got {self.origin!r}")


def supernet_info(model: nn.Module) -> SupernetInfo | None:
    """The record on ``model`` itself (``None`` if it has none)."""
    info = getattr(model, ATTRIBUTE, None)
    return info if isinstance(info, SupernetInfo) else None


def mark_supernet(model: nn.Module, info: SupernetInfo) -> None:
    """Keep ``info`` on ``model`` (a plain attribute: not in its ``state_dict``)."""
    if not isinstance(info, SupernetInfo):
        raise TypeError(f"info must be a SupernetInfo, got {info!r}")
    setattr(model, ATTRIBUTE, info)


def find_supernet(model: nn.Module, name: str | nn.Module | None = None) -> nn.Module:
    """The supernet inside ``model``: the submodule called ``name`` (or ``name`` itself, a
    module inside ``model``); else the one outermost module (``model`` included) that carries
    a record; else ``model`` itself (a model of the user's own choice modules). ``ValueError``
    when several carry a record and ``name`` does not say which, or ``name`` is not inside.

    >>> from torch import nn
    >>> teacher, student = nn.Linear(4, 2), nn.Linear(4, 2)
    >>> for net in (teacher, student):
    ...     mark_supernet(net, SupernetInfo(input_shape=(4,)))
    >>> model = nn.ModuleDict({"teacher": teacher, "student": student})
    >>> find_supernet(model, "student") is student
    True
    """
    if isinstance(name, nn.Module):
        if not any(m is name for m in model.modules()):
            raise ValueError(f"supernet={type(name).__name__} is not a module of "
                             f"{type(model).__name__}; pass a module inside it or its name")
        return name
    found = outermost(model, lambda m: supernet_info(m) is not None)
    if name is not None:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"supernet={name!r} names no module of {type(model).__name__}; "
                             f"its supernets: {[n for n, _ in found] or 'none'}") from None
    if len(found) > 1:
        raise ValueError(f"{type(model).__name__} holds {len(found)} supernets "
                         f"({', '.join(n or '(the model)' for n, _ in found)}): say which "
                         f"to search with supernet={found[-1][0]!r} (a name or the module)")
    return found[0][1] if found else model


def outermost(model: nn.Module, accept) -> list[tuple[str, nn.Module]]:
    """The named modules of ``model`` that ``accept`` takes and that lie inside no other
    accepted module, in module order."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        inside = any(name.startswith(f"{outer}.") or not outer for outer, _ in found)
        if not inside and accept(module):
            found.append((name, module))
    return found
