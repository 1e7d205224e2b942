"""Differentiable mixed forward of a whole supernet: :func:`set_mixing` gives every choice
module the weights of the labels it reads (see :mod:`nas_aug.space.mixing` for what each
module computes under them).

Which labels set the input width of each layer is found once per supernet by probing it with
a few forward passes of an example input; the probe also rejects the labels that cannot be
mixed (a layer choice whose candidates differ in output shape, an operation outside the
choice modules that reads a mixed width, ...).
"""

from __future__ import annotations

import copy
import random
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..space import ChoiceModule, LayerChoice, Space, sample_key
from ..space.elastic import ElasticConv2d, ElasticLinear, InputWidth, _sources
from ..space.mixing import Mix, UnmixableError, check_weights
from .core import activate, choice_modules, device_of, record_input_shapes, space_of
from .record import supernet_info

__all__ = ["mixed", "set_mixing", "unmixable"]


def set_mixing(supernet: nn.Module, weights: Mapping[str, Tensor] | None,
               space: Space | None = None, example_input: Tensor | None = None,
               support: Mapping[str, Sequence[int]] | None = None) -> None:
    """Make ``supernet``'s forward the mixture given by ``weights`` (``{label: 1-D tensor over
    its candidates}``, e.g. ``softmax(alpha)``); labels left out keep their active value.
    ``None`` restores the ordinary single-path forward. ``support`` names, per label, the
    candidates to compute even where their weight is zero (ProxylessNAS's binary gates: the
    value is one path, the gradient needs both sampled paths); by default a mixture
    computes the candidates with a non-zero weight.

    The first call probes the supernet with ``example_input`` (default: a random batch of the
    input shape in its :class:`~nas_aug.supernet.SupernetInfo`). ``ValueError`` for bad
    weights and for labels that cannot be mixed (the message says why). Set the weights again
    after each optimiser step of theirs: the mixture keeps the tensors given here, with their
    autograd graph.

    >>> from nas_aug.space import LayerChoice
    >>> op = LayerChoice("op", {"relu": nn.ReLU(), "tanh": nn.Tanh()})
    >>> x = torch.tensor([[-1.0, 2.0]])
    >>> set_mixing(op, {"op": torch.tensor([0.5, 0.5])}, example_input=x)
    >>> op(x)
    tensor([[-0.3808,  1.4820]])
    >>> set_mixing(op, None)
    >>> op(x)  # the active candidate again, the last one
    tensor([[-0.7616,  0.9640]])
    """
    modules = choice_modules(supernet)
    if weights is None:
        for _, module in modules:
            module.mixing = None
        return
    weights = check_weights(space_of(supernet) if space is None else space, weights)
    mixes = _mixes(weights, support or {})
    refused = unmixable(supernet, example_input)
    for label in mixes:
        if label in refused:
            raise UnmixableError(label, refused[label])
    _install(modules, mixes, _PLANS[supernet].input_widths)


def unmixable(supernet: nn.Module, example_input: Tensor | None = None) -> dict[str, str]:
    """The labels of ``supernet`` that cannot be mixed, each with the reason (probing the
    supernet as :func:`set_mixing` does, once).

    >>> from nas_aug.space import LayerChoice
    >>> unmixable(LayerChoice("op", [nn.ReLU(), nn.Tanh()]), example_input=torch.ones(1, 2))
    {}
    """
    if supernet not in _PLANS:
        _PLANS[supernet] = _probe(supernet, example_input)
    return dict(_PLANS[supernet].unmixable)


@contextmanager
def mixed(supernet: nn.Module, weights: Mapping[str, Tensor], space: Space | None = None,
          example_input: Tensor | None = None,
          support: Mapping[str, Sequence[int]] | None = None) -> Iterator[None]:
    """:func:`set_mixing` for the duration of a ``with`` block; the previous state comes back.

    >>> from nas_aug.space import ElasticDepth
    >>> stage = ElasticDepth("depth", [nn.Linear(2, 2) for _ in range(2)])
    >>> x = torch.ones(1, 2)
    >>> with mixed(stage, {"depth": torch.tensor([1.0, 0.0])}, example_input=x):
    ...     torch.equal(stage(x), stage.blocks[0](x))
    True
    >>> torch.equal(stage(x), stage.blocks[1](stage.blocks[0](x)))
    True
    """
    saved = [(module, module.mixing) for _, module in choice_modules(supernet)]
    set_mixing(supernet, weights, space, example_input, support)
    try:
        yield
    finally:
        for module, mixing in saved:
            module.mixing = mixing


def _mixes(weights: Mapping[str, Tensor], support: Mapping[str, Sequence[int]]
           ) -> dict[str, Mix]:
    if not weights:
        return {}
    unknown = sorted(set(support) - set(weights))
    if unknown:
        raise ValueError(f"support names labels {unknown} that have no weights")
    nonzero = torch.cat([w.detach().reshape(-1) != 0 for w in weights.values()]).tolist()
    mixes, start = {}, 0
    for label, w in weights.items():
        active = tuple(i for i in range(len(w)) if nonzero[start + i] or i in support.get(
            label, ()))
        if not active:
            raise ValueError(f"weights[{label!r}] are all zero: at least one candidate needs "
                             "a non-zero weight")
        mixes[label] = Mix(label, w, active)
        start += len(w)
    return mixes


def _reads_width(module: nn.Module) -> bool:
    return isinstance(module, ElasticLinear) or (isinstance(module, ElasticConv2d)
                                                 and not module.depthwise)


def _install(modules: list[tuple[str, ChoiceModule]], mixes: Mapping[str, Mix],
             input_widths: Mapping[str, InputWidth]) -> None:
    for name, module in modules:
        labels = {choice.label for choice in module.choices()}
        if _reads_width(module):
            module.input_width = input_widths.get(name)
            if module.input_width is not None:
                labels.add(module.input_width[0])
        module.mixing = {label: mixes[label] for label in labels if label in mixes} or None


@dataclass
class _Plan:
    input_widths: dict[str, InputWidth]  # module name -> label and widths of its input
    unmixable: dict[str, str]  # label -> why it cannot be mixed


# the probe's findings per supernet, made on its first mixing (kept off the user's model)
_PLANS: weakref.WeakKeyDictionary[nn.Module, _Plan] = weakref.WeakKeyDictionary()


@torch.no_grad()
def _probe(supernet: nn.Module, example_input: Tensor | None) -> _Plan:
    """On an eval-mode copy: find which label sets the input width of each width-reading layer
    (changing one label of the largest sample at a time), then check the labels: widths as
    found on samples that change several labels, and mixed forwards (see :func:`_check`)."""
    net = copy.deepcopy(supernet).eval()
    space, modules = space_of(net), choice_modules(net)
    _install(modules, {}, {})
    if example_input is None:
        info = supernet_info(supernet)
        shape = None if info is None else info.input_shape
        if shape is None:
            raise ValueError(f"{type(supernet).__name__} records no input shape (its "
                             "SupernetInfo): pass example_input (a batch of inputs) to find "
                             "the width of each layer")
        example_input = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    x = example_input.to(device_of(net))
    readers = {module: name for name, module in modules if _reads_width(module)}
    unmixable = {choice.label: f"{name or 'the model'} ({type(module).__name__}) has no mixed "
                               "forward"
                 for name, module in modules if not module.mixable for choice in module.choices()}

    def input_sizes(sample: Mapping) -> dict[str, int]:
        activate(net, sample, space)
        return {readers[m]: shape[-1] if isinstance(m, ElasticLinear) else shape[1]
                for m, shape in record_input_shapes(net, x).items() if m in readers}

    largest = space.largest()
    cache: dict[str, dict[str, int]] = {}

    def sizes_under(sample: Mapping) -> dict[str, int]:
        key = sample_key(sample)
        if key not in cache:
            cache[key] = input_sizes(sample)
        return cache[key]

    # widths are set by the elastic layers' output choices (a layer choice that changed a
    # width would change its output's shape, which the checks below refuse)
    width_labels = [label for label in space.labels if any(
        label in {c.label for c in _sources(m.out_choice)} for _, m in modules
        if isinstance(m, (ElasticConv2d, ElasticLinear)))]
    input_widths: dict[str, InputWidth] = {}
    for name in readers.values():
        # a reader inside a layer choice's candidate runs only when that candidate is chosen
        base = {**largest, **_choices_on_path(net, name)}
        labels = space.labels if base == largest else width_labels
        seen = {label: {v: s[name] for v in space.candidates(label)
                        if name in (s := sizes_under({**base, label: v}))}
                for label in labels}
        labels = [label for label, widths in seen.items() if len(set(widths.values())) > 1]
        if len(labels) > 1:
            for label in labels:
                unmixable.setdefault(label, f"the input width of {name} depends on {labels}")
        elif labels:
            (label,) = labels
            candidates = space.candidates(label)
            if len(seen[label]) == len(candidates):
                input_widths[name] = (label, tuple(seen[label][v] for v in candidates))
            else:
                unmixable.setdefault(label, f"the input width of {name} is unknown under some "
                                            "of its candidates")

    rng = random.Random(0)
    samples = [space.smallest(), largest, space.random(rng), space.random(rng)]
    for sample in samples:  # samples that change several labels at once
        for name, size in input_sizes(sample).items():
            label, widths = input_widths.get(name, (None, ()))
            if label is not None and widths[space.candidates(label).index(sample[label])] != size:
                unmixable.setdefault(label, f"the input width of {name} does not follow it "
                                            "alone")

    def check(labels: list[str]) -> str | None:
        return _check(net, x, space, labels, samples, input_widths)

    unmixable.update(_blame([label for label in space.labels if label not in unmixable], check))
    return _Plan(input_widths, unmixable)


def _choices_on_path(net: nn.Module, name: str) -> dict[str, object]:
    """The layer-choice values under which the module called ``name`` can run."""
    parts, values, module = name.split(".") if name else [], {}, net
    for i, part in enumerate(parts):
        if isinstance(module, LayerChoice) and part == "candidates" and i + 1 < len(parts):
            values[module.choice.label] = next(c for c in module.choice.candidates
                                               if str(c) == parts[i + 1])
        module = getattr(module, part)
    return values


def _check(net: nn.Module, x: Tensor, space: Space, labels: list[str], samples: list[dict],
           input_widths: Mapping[str, InputWidth]) -> str | None:
    """Why mixing ``labels`` fails in ``net``, or ``None``: one-hot weights for each sample, with
    every candidate computed (as soft weights would), must give the sample's plain forward."""
    modules = choice_modules(net)
    try:
        for sample in samples:
            activate(net, sample, space)
            _install(modules, {}, input_widths)
            plain = net(x)
            mixes = {}
            for label in labels:
                candidates = space.candidates(label)
                one_hot = torch.tensor([float(c == sample[label]) for c in candidates],
                                       device=x.device)
                mixes[label] = Mix(label, one_hot, tuple(range(len(candidates))))
            _install(modules, mixes, input_widths)
            out = net(x)
            if isinstance(plain, Tensor) and out.shape != plain.shape:
                return (f"it sets the shape of the supernet's output ({tuple(plain.shape)} in "
                        f"the plain forward, {tuple(out.shape)} mixed)")
            try:
                torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-5)
            except AssertionError:
                return ("one-hot weights do not give the plain forward: does an operation "
                        "outside the choice modules read a width it sets?")
    except UnmixableError as err:
        return err.why
    except (RuntimeError, ValueError) as err:
        return f"the mixed forward fails ({err})"
    finally:
        _install(modules, {}, input_widths)
    return None


def _blame(labels: list[str], check: Callable[[list[str]], str | None]) -> dict[str, str]:
    """``{label: why}`` for the labels that fail ``check``: all together first, then one by
    one (all of them if only their combination fails)."""
    why = check(labels) if labels else None
    if why is None:
        return {}
    found = {label: w for label in labels if (w := check([label])) is not None}
    if not found:
        return dict.fromkeys(labels, why)
    return found | _blame([label for label in labels if label not in found], check)
