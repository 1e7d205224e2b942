"""A supernet is any module holding choice modules: list its space, activate a sample,
and extract the standalone sub-network of a sample with the trained weights it inherits."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..space import ChoiceModule, ElasticDepth, LayerChoice, Sample, Space


def choice_modules(model: nn.Module) -> list[tuple[str, ChoiceModule]]:
    """``(name, module)`` for every choice module inside ``model`` (itself included)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ChoiceModule)]


def space_of(model: nn.Module) -> Space:
    """The space spanned by every labelled choice inside ``model``."""
    return Space(c for _, m in choice_modules(model) for c in m.choices())


def activate(model: nn.Module, sample: Mapping[str, Any], space: Space | None = None) -> Sample:
    """Make ``sample`` the active path of ``model``; returns the validated sample."""
    sample = (space_of(model) if space is None else space).validate(sample)
    for _, module in choice_modules(model):
        module.activate(sample)
    return sample


def canonical_sample(model: nn.Module, sample: Mapping[str, Any],
                     space: Space | None = None) -> Sample:
    """``sample`` with every label that has no effect under it (blocks beyond an elastic depth,
    unchosen layer candidates) set to its smallest candidate: one sample per architecture.

    >>> from nas_aug.space import ValueChoice
    >>> from nas_aug.space.elastic import ElasticLinear
    >>> stage = ElasticDepth("depth", [ElasticLinear(4, 4, out_features_choice=ValueChoice(
    ...     f"b{i}.width", [2, 4])) for i in range(2)])
    >>> canonical_sample(stage, {"depth": 1, "b0.width": 4, "b1.width": 4})
    {'depth': 1, 'b0.width': 4, 'b1.width': 2}
    """
    space = space_of(model) if space is None else space
    sample = space.validate(sample)
    used: set[str] = set()

    def visit(module: nn.Module) -> None:
        if isinstance(module, ChoiceModule):
            used.update(choice.label for choice in module.choices())
        if isinstance(module, ElasticDepth):
            children = list(module.blocks)[: sample[module.choice.label]]
        elif isinstance(module, LayerChoice):
            children = [module.candidate(sample[module.choice.label])]
        else:
            children = list(module.children())
        for child in children:
            visit(child)

    visit(model)
    return {label: value if label in used else space.candidates(label)[0]
            for label, value in sample.items()}


@torch.no_grad()
def record_input_shapes(model: nn.Module, example_input: torch.Tensor
                        ) -> dict[nn.Module, tuple[int, ...]]:
    """Shape of the first input each submodule receives in one eval-mode forward pass."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def hook(module, args):
        if args and isinstance(args[0], torch.Tensor):
            shapes.setdefault(module, tuple(args[0].shape))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


def _freeze_tree(module: nn.Module, shapes: Mapping[nn.Module, tuple[int, ...]]) -> nn.Module:
    while isinstance(module, ChoiceModule):
        frozen = module.freeze(shapes.get(module))
        frozen.training = module.training
        module = frozen
    for name, child in list(module.named_children()):
        frozen = _freeze_tree(child, shapes)
        if frozen is not child:
            setattr(module, name, frozen)
    return module


def extract_subnet(model: nn.Module, sample: Mapping[str, Any],
                   example_input: torch.Tensor) -> nn.Module:
    """A standalone copy of ``model`` with ``sample`` frozen in: no choice modules remain, the
    weights (and batch-norm statistics) are those of the active path. ``model`` is unchanged.

    ``example_input`` (any batch size) tells each elastic layer its input shape.
    """
    subnet = copy.deepcopy(model)
    activate(subnet, sample)
    shapes = record_input_shapes(subnet, example_input.to(device_of(subnet)))
    return _freeze_tree(subnet, shapes)


def device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class _Reached(Exception):
    """Stops a probing forward where the supernet's input is known."""


def input_of(model: nn.Module, supernet: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """What ``supernet`` receives when ``model`` runs on ``x`` (layers before it applied; the
    forward stops there), in eval mode and without gradients, so nothing in the model
    changes; ``None`` if ``model``'s forward never reaches ``supernet``.

    >>> supernet = nn.Linear(3, 2)
    >>> input_of(nn.Sequential(nn.Linear(5, 3), supernet), supernet, torch.zeros(4, 5)).shape
    torch.Size([4, 3])
    """
    if supernet is model:
        return x
    seen: list[torch.Tensor] = []

    def stop(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0])
        raise _Reached

    modes = {m: m.training for m in model.modules()}
    handle = supernet.register_forward_pre_hook(stop)
    try:
        with torch.no_grad():
            model.eval()(x)
    except _Reached:
        pass
    finally:
        handle.remove()
        for module, training in modes.items():
            module.train(training)
    return seen[0] if seen else None


@contextlib.contextmanager
def outputs_of(module: nn.Module) -> Iterator[list[Any]]:
    """The outputs of every call of ``module`` inside the ``with`` block, in a list.

    >>> net = nn.Linear(3, 2)
    >>> with outputs_of(net) as outputs:
    ...     _ = net(torch.zeros(4, 3))
    >>> outputs[0].shape
    torch.Size([4, 2])
    """
    outputs: list[Any] = []
    handle = module.register_forward_hook(lambda m, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()
