"""NNI 3.0 search spaces, searched by nas_aug: convert NNI's mutable modules to nas_aug's
choice modules, and take a searched sample back to NNI.

Labels and values are kept, so a sample is the same ``{label: value}`` dict on both sides:
NNI's ``space.freeze(sample)`` builds the sub-network nas_aug found, and the exported weights
load into it. Needs the optional extra ``nas_aug[nni]``; nothing else in nas_aug imports nni.

What converts (every other NNI module, and any value NNI could sample that nas_aug would not
see, is refused with its place and the reason):

* ``LayerChoice`` -> :class:`~nas_aug.space.LayerChoice` (a list's candidates named 0, 1, ...);
* ``Repeat(blocks, depth)`` -> :class:`~nas_aug.space.ElasticDepth` (depth a range from 1 or
  more up to the number of blocks), or the blocks in sequence when the depth is fixed;
* ``MutableConv2d`` -> :class:`~nas_aug.space.ElasticConv2d`: ``out_channels`` and
  ``kernel_size`` (odd, with padding ``kernel_size // 2``) may be choices or expressions of
  one choice; the input width follows the input; ``groups`` equal to the channels makes it
  depthwise;
* ``MutableLinear`` -> :class:`~nas_aug.space.ElasticLinear` (``out_features`` a choice);
* ``MutableBatchNorm2d`` -> :class:`~nas_aug.space.ElasticBatchNorm2d`;
* any other ``Mutable*`` layer whose arguments are all fixed -> its torch layer, same weights.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .io import check_unchanged, read_json, write_json
from .sidecars import SIDECARS, Sidecar
from .space import ElasticBatchNorm2d, ElasticConv2d, ElasticDepth, ElasticLinear, LayerChoice
from .space.choice import (
    ComputedChoice,
    MappedChoice,
    Sample,
    ValueChoice,
    is_choice,
    largest_value,
    resolve,
)
from .supernet import SupernetInfo, mark_supernet, space_of, supernet_info

try:
    with warnings.catch_warnings():  # nni 3.0 warns about torch classes it does not know
        warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module",
                                category=RuntimeWarning)
        from nni.mutable import Categorical, Mutable
        from nni.nas.nn.pytorch import LayerChoice as NNILayerChoice
        from nni.nas.nn.pytorch import (
            ModelSpace,
            MutableBatchNorm2d,
            MutableConv2d,
            MutableLinear,
            MutableModule,
            ParametrizedModule,
            Repeat,
        )
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError("nas_aug.nni needs NNI 3.0: pip install 'nas_aug[nni]'") from err

NNI_SAMPLES_FILE = "nni_samples.json"


class Unconvertible(ValueError):
    """An NNI space uses features nas_aug does not convert; the message lists every one."""


def holds_nni(model: nn.Module) -> bool:
    """Whether ``model`` holds an NNI space that :func:`from_nni` has not converted."""
    return any(isinstance(m, MutableModule) and supernet_info(m) is None
               for m in model.modules())


def from_nni(model: nn.Module) -> nn.Module:
    """Convert every NNI mutable module inside ``model`` to nas_aug choice modules, in place
    (the returned module is ``model`` unless ``model`` itself is a layer NNI mutates).

    The space (labels and candidate values) stays NNI's. Every NNI model space converted is
    marked as a supernet root (a :class:`~nas_aug.supernet.SupernetInfo` of origin ``"nni"``
    holding its labels), so callbacks search and export it alone.
    Anything that cannot be converted raises :class:`Unconvertible` listing each place and
    reason, before ``model`` is changed.

    >>> import nni
    >>> from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableLinear
    >>> class Net(ModelSpace):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = MutableLinear(4, nni.choice("width", [8, 16]))
    ...         self.act = LayerChoice([nn.ReLU(), nn.Tanh()], label="act")
    >>> net = from_nni(Net())
    >>> type(net.fc).__name__, supernet_info(net).labels
    ('ElasticLinear', ('width', 'act'))
    """
    problems = [f"{path or 'the model'} ({type(m).__name__}): {problem}"
                for path, m in model.named_modules() if (problem := _problem(m)) is not None]
    if problems:
        raise Unconvertible("cannot convert this NNI space to nas_aug choice modules:\n  "
                            + "\n  ".join(problems) + "\nnas_aug converts LayerChoice, Repeat, "
                            "MutableConv2d, MutableLinear, MutableBatchNorm2d and fixed Mutable* "
                            "layers (see nas_aug.nni)")
    roots = _outermost(model, ModelSpace) or [model]
    converted = _convert(model)
    for root in roots:
        root = converted if root is model else root
        mark_supernet(root, SupernetInfo(origin="nni", labels=tuple(space_of(root).labels)))
    return converted


def write_nni_samples(directory: Path, supernet: nn.Module, subnet: nn.Module,
                      result: Any) -> None:
    """Write ``nni_samples.json`` (the chosen and top samples, distinct, in order, as NNI's
    ``{label: value}`` dicts over the NNI space's labels) if ``supernet`` is a converted NNI
    space."""
    info = supernet_info(supernet)
    if info is None or info.origin != "nni":
        return
    distinct: list[dict[str, Any]] = []
    for sample in [result.sample, *(candidate.sample for candidate in result.top)]:
        nni_sample = {label: sample[label] for label in info.labels}
        if nni_sample not in distinct:
            distinct.append(nni_sample)
    write_json(directory / NNI_SAMPLES_FILE, distinct, indent=1)


SIDECARS.add("nni", Sidecar(NNI_SAMPLES_FILE, write_nni_samples))


def load_nni_subnet(space: nn.Module, export_dir: str | os.PathLike,
                    weights: bool = True) -> nn.Module:
    """NNI's own sub-network of ``space`` (an unconverted NNI model space, as the user's code
    builds it) for the exported architecture, with the exported weights loaded (strict).

    ``export_dir`` holds the export of a search over ``from_nni(space)``."""
    from .export import WEIGHTS_FILE, load_architecture, load_weights

    path = Path(export_dir) / NNI_SAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no NNI samples at {str(path)!r}: is {str(export_dir)!r} the "
                                "export of a search over nas_aug.nni.from_nni(space)?")
    check_unchanged(path)
    samples = read_json(path, "NNI samples")
    net = space.freeze(samples[0])
    if weights:
        arch = load_architecture(export_dir)
        net.load_state_dict(load_weights(path.parent / (arch.weights or WEIGHTS_FILE)))
    return net


# ---- what converts ----------------------------------------------------------------------------
def _outermost(model: nn.Module, kind: type) -> list[nn.Module]:
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        if isinstance(module, kind):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return found


def _problem(module: nn.Module) -> str | None:
    """Why ``module`` (not its children) cannot be converted, or ``None``."""
    if not isinstance(module, MutableModule):
        return None
    try:
        if isinstance(module, NNILayerChoice):
            _check_uniform(module.choice)
        elif isinstance(module, Repeat):
            _depth(module)
        elif isinstance(module, ParametrizedModule):
            _plan_layer(module)
        elif type(module).__module__.startswith("nni.") and not isinstance(module, ModelSpace):
            return "an NNI module nas_aug has no counterpart for"
        elif module.mutables:
            labels = sorted({label for m in module.mutables for label in m.simplify()})
            return (f"values {labels} registered with add_mutable are read in your forward "
                    "code, where nas_aug cannot follow them")
    except Unconvertible as err:
        return str(err)
    return None


def _check_uniform(choice: Categorical) -> None:
    if any(abs(w - choice.weights[0]) > 1e-9 for w in choice.weights):
        raise Unconvertible(f"label {choice.label!r} has prior weights {choice.weights}; "
                            "nas_aug's strategies sample candidates uniformly")


def _convert(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        new = _convert(child)
        if new is not child:
            setattr(module, name, new)
    if isinstance(module, NNILayerChoice):
        names = list(module.names)
        candidates = ([module[n] for n in names] if names == list(range(len(names)))
                      else {str(n): module[n] for n in names})
        return LayerChoice(module.label, candidates)
    if isinstance(module, Repeat):
        label, depths = _depth(module)
        if label is None:
            return nn.Sequential(*module.blocks)
        return ElasticDepth(label, list(module.blocks), min_depth=depths[0])
    if isinstance(module, ParametrizedModule):
        return _plan_layer(module)()
    return module


def _depth(repeat: Repeat) -> tuple[str | None, list[int]]:
    """(label, depths) of a Repeat; label ``None`` when its depth is fixed."""
    depth = repeat.depth_choice
    if not isinstance(depth, Mutable):
        return None, [depth]
    if not isinstance(depth, Categorical):
        raise Unconvertible(f"its depth {depth!r} is an expression; nas_aug converts a depth "
                            "that is one nni.choice or a (min, max) range")
    _check_uniform(depth)
    depths = sorted(depth.values)
    if depths != list(range(depths[0], len(repeat.blocks) + 1)) or depths[0] < 1:
        raise Unconvertible(f"its depth takes {depths}; nas_aug's elastic depth takes every "
                            f"depth from one of at least 1 up to its {len(repeat.blocks)} blocks")
    return depth.label, depths


def _value(value: Any, what: str) -> Any:
    """A fixed value, or the nas_aug choice for an NNI mutable of categorical labels."""
    if not isinstance(value, Mutable):
        return value
    leaves = value.simplify()
    others = sorted(label for label, leaf in leaves.items() if not isinstance(leaf, Categorical))
    if others:
        raise Unconvertible(f"{what} depends on {others}, which are not nni.choice values; "
                            "nas_aug converts categorical choices")
    for leaf in leaves.values():
        _check_uniform(leaf)
    sources = [ValueChoice(label, leaf.values) for label, leaf in leaves.items()]
    if len(sources) == 1 and value is next(iter(leaves.values())):
        return sources[0]
    evaluate = functools.partial(_evaluate, value, tuple(leaves))
    return MappedChoice(sources[0], evaluate) if len(sources) == 1 else \
        ComputedChoice(sources, evaluate)


def _evaluate(expression: Mutable, labels: tuple[str, ...], *values: Any) -> Any:
    return expression.freeze(dict(zip(labels, values)))


def _fixed(module: ParametrizedModule, names: tuple[str, ...]) -> None:
    mutable = [n for n in names if isinstance(module.args.get(n), Mutable)]
    if mutable:
        raise Unconvertible(f"its argument(s) {mutable} are choices; nas_aug converts choices of "
                            "the output width and kernel size only")


def _plan_layer(module: ParametrizedModule) -> Callable[[], nn.Module]:
    """A builder of the nas_aug layer for an NNI parametrized layer (raises if none)."""
    mutable = sorted(n for n, v in module.args.items() if isinstance(v, Mutable))
    if not mutable:
        if type(module)._bound_type is None:
            raise Unconvertible("a parametrized module of your own; nas_aug cannot tell what "
                                "it builds")
        return functools.partial(_fixed_layer, module)
    if isinstance(module, MutableConv2d):
        return _plan_conv(module)
    if isinstance(module, MutableLinear):
        _fixed(module, ("bias",))
        out = _value(module.args["out_features"], "out_features")
        in_features = largest_value(_value(module.args["in_features"], "in_features"))
        return functools.partial(_elastic_linear, module, in_features, out)
    if isinstance(module, MutableBatchNorm2d):
        _fixed(module, ("eps", "momentum", "affine", "track_running_stats"))
        width = largest_value(_value(module.args["num_features"], "num_features"))
        return functools.partial(_elastic_batch_norm, module, width)
    raise Unconvertible(f"its argument(s) {mutable} are choices; nas_aug converts choices in "
                        "MutableConv2d, MutableLinear and MutableBatchNorm2d only")


def _pair(value: Any, what: str) -> Any:
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise Unconvertible(f"{what}={value}; nas_aug's elastic conv is square")
        return value[0]
    return value


def _plan_conv(conv: MutableConv2d) -> Callable[[], nn.Module]:
    args = conv.args
    _fixed(conv, ("stride", "dilation", "bias", "padding_mode"))
    if args["padding_mode"] != "zeros" or _pair(args["dilation"], "dilation") != 1:
        raise Unconvertible(f"padding_mode={args['padding_mode']!r}, "
                            f"dilation={args['dilation']!r}; nas_aug converts undilated convs "
                            "with zero padding")
    kernel = _value(_pair(args["kernel_size"], "kernel_size"), "kernel_size")
    out = _value(args["out_channels"], "out_channels")
    in_channels = _value(args["in_channels"], "in_channels")
    padding = _pair(args["padding"], "padding")
    padding = _value(padding, "padding")
    for sample in _samples(kernel, padding):
        k, pad = resolve(kernel, sample), resolve(padding, sample)
        pad = k // 2 if isinstance(pad, str) and pad == "same" else pad
        if k % 2 == 0 or pad != k // 2:
            raise Unconvertible(f"kernel_size {k} with padding {pad}; nas_aug's elastic conv "
                                "takes odd kernels padded by kernel_size // 2")
    groups = args["groups"]
    depthwise = isinstance(groups, Mutable) or groups != 1
    if depthwise and not _same_values(groups, args["in_channels"], args["out_channels"]):
        raise Unconvertible(f"groups={groups!r}; nas_aug converts plain (groups=1) and "
                            "depthwise (groups = in_channels = out_channels) convs")
    return functools.partial(_elastic_conv, conv, largest_value(in_channels), kernel,
                             None if depthwise else out, depthwise)


def _choice_sources(choice: Any) -> tuple[ValueChoice, ...]:
    return choice.sources if isinstance(choice, ComputedChoice) else \
        (choice.source,) if isinstance(choice, MappedChoice) else (choice,)


def _same_values(*values: Any) -> bool:
    """Whether NNI values (fixed or choices) are equal under every sample."""
    choices = [_value(v, "groups") for v in values]
    return all(len({resolve(c, sample) for c in choices}) == 1 for sample in _samples(*choices))


def _samples(*values: Any) -> list[Sample]:
    """Every sample of the labels that ``values`` (fixed values or choices) read."""
    sources = {source.label: source.candidates for v in values if is_choice(v)
               for source in _choice_sources(v)}
    return [dict(zip(sources, combo)) for combo in itertools.product(*sources.values())]


def _elastic_conv(conv: MutableConv2d, in_channels: int, kernel: Any, out: Any,
                  depthwise: bool) -> ElasticConv2d:
    stride = _pair(conv.args["stride"], "stride")
    width = in_channels if depthwise else largest_value(out)
    new = ElasticConv2d(in_channels, width, kernel, stride=stride, depthwise=depthwise,
                        bias=bool(conv.args["bias"]),
                        out_channels_choice=out if is_choice(out)
                        else None)
    return new.to(conv.weight.device, conv.weight.dtype)


def _elastic_linear(fc: MutableLinear, in_features: int, out: Any) -> ElasticLinear:
    new = ElasticLinear(in_features, largest_value(out), bias=bool(fc.args["bias"]),
                        out_features_choice=out if is_choice(out)
                        else None)
    return new.to(fc.weight.device, fc.weight.dtype)


def _elastic_batch_norm(bn: MutableBatchNorm2d, width: int) -> ElasticBatchNorm2d:
    new = ElasticBatchNorm2d(width, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    reference = next(bn.parameters(), None)
    return new if reference is None else new.to(reference.device, reference.dtype)


def _fixed_layer(module: ParametrizedModule) -> nn.Module:
    """The torch layer of an NNI layer with fixed arguments, holding the same weights."""
    layer = module.freeze({})
    layer.load_state_dict(module.state_dict())
    reference = next(module.parameters(), None)
    return layer if reference is None else layer.to(reference.device)
