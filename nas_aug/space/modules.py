"""Choice modules: torch modules whose structure is picked by a sample.

Every choice module keeps the largest configuration active until :func:`activate` is called,
declares its own labels through :meth:`ChoiceModule.choices`, and turns itself into a plain
module with :meth:`ChoiceModule.freeze` (the weights it keeps are those of the active path).
While :attr:`ChoiceModule.mixing` is set (see :mod:`nas_aug.space.mixing`), a module computes
a weighted mixture of its candidates instead of the active one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from .choice import ValueChoice

if TYPE_CHECKING:
    from .mixing import Mix


class ChoiceModule(nn.Module):
    """Base of modules whose active structure is set by a sample (see module docstring).

    ``mixing`` (set by :func:`~nas_aug.supernet.set_mixing`, ``None`` otherwise) holds the
    weights of the mixed labels this module reads; only a module whose ``mixable`` is true
    honours it.
    """

    mixable: ClassVar[bool] = False
    mixing: dict[str, Mix] | None = None

    def choices(self) -> list[ValueChoice]:
        """The labelled choices this module reads (not those of its children)."""
        return []

    def activate(self, sample: Mapping[str, Any]) -> None:
        """Set the active structure from a validated ``sample``."""

    def freeze(self, input_shape: tuple[int, ...] | None) -> nn.Module:
        """A plain module equal to the active structure; ``input_shape`` is the shape this
        module saw in a forward pass with the sample active (``None`` if it was not called)."""
        raise NotImplementedError


def _require_shape(module: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_shape is None:
        raise RuntimeError(f"{type(module).__name__} was not called in the probe forward pass, "
                           "so its input shape under this sample is unknown")
    return input_shape


class LayerChoice(ChoiceModule):
    """Pick one of several candidate modules by name: the keys of a dict, or the positions
    0, 1, ... of a list (as NNI names them).

    >>> import torch
    >>> op = LayerChoice("b0.op", {"conv": nn.Conv2d(4, 4, 3, padding=1), "skip": nn.Identity()})
    >>> op.activate({"b0.op": "skip"})
    >>> op(torch.ones(1, 4, 2, 2)).sum().item()
    16.0
    """

    mixable = True

    def __init__(self, label: str, candidates: Mapping[str, nn.Module] | Sequence[nn.Module]):
        super().__init__()
        if not candidates:
            raise ValueError(f"LayerChoice {label!r} needs at least one candidate module")
        if not isinstance(candidates, Mapping):
            candidates = dict(enumerate(candidates))
        names = list(candidates)
        self.candidates = nn.ModuleDict({str(name): m for name, m in candidates.items()})
        self.choice = ValueChoice(label, names)
        self.active = self.choice.candidates[-1]

    def candidate(self, name: str | int) -> nn.Module:
        """The candidate module called ``name``."""
        return self.candidates[str(name)]

    def choices(self) -> list[ValueChoice]:
        return [self.choice]

    def activate(self, sample: Mapping[str, Any]) -> None:
        self.active = self.choice.resolve(sample)

    def forward(self, *args, **kwargs):
        if self.mixing is not None:
            names = self.choice.candidates
            return self.mixing[self.choice.label].combine(
                lambda i: self.candidate(names[i])(*args, **kwargs))
        return self.candidate(self.active)(*args, **kwargs)

    def freeze(self, input_shape: tuple[int, ...] | None) -> nn.Module:
        return self.candidate(self.active)


class ElasticDepth(ChoiceModule):
    """Run the first ``depth`` blocks of a stage; the rest are skipped.

    >>> import torch
    >>> stage = ElasticDepth("s1.depth", [nn.Linear(2, 2) for _ in range(3)], min_depth=1)
    >>> stage.choice.candidates
    (1, 2, 3)
    >>> stage.activate({"s1.depth": 1})
    >>> len(stage.freeze((1, 2)))
    1
    """

    mixable = True

    def __init__(self, label: str, blocks: Sequence[nn.Module], min_depth: int = 1):
        super().__init__()
        if not 1 <= min_depth <= len(blocks):
            raise ValueError(f"min_depth={min_depth} must lie in [1, {len(blocks)}] "
                             f"for {len(blocks)} blocks")
        self.blocks = nn.ModuleList(blocks)
        self.choice = ValueChoice(label, list(range(min_depth, len(blocks) + 1)))
        self.depth = len(blocks)

    def choices(self) -> list[ValueChoice]:
        return [self.choice]

    def activate(self, sample: Mapping[str, Any]) -> None:
        self.depth = self.choice.resolve(sample)

    def forward(self, x):
        if self.mixing is not None:
            return self._mixed_forward(x)
        for block in self.blocks[: self.depth]:
            x = block(x)
        return x

    def _mixed_forward(self, x):
        """The weighted sum of the outputs after each depth with a non-zero weight."""
        mix, depths = self.mixing[self.choice.label], self.choice.candidates
        outputs = {}
        for depth, block in enumerate(self.blocks[: mix.largest(depths)], 1):
            x = outputs[depth] = block(x)
        return mix.combine(lambda i: outputs[depths[i]])

    def freeze(self, input_shape: tuple[int, ...] | None) -> nn.Module:
        return nn.Sequential(*self.blocks[: self.depth])
