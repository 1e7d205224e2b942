"""Take a sub-network of an elasticized timm model back to timm: :func:`timm_definition`
writes timm's own architecture definition as plain JSON data (the model class, its constructor
arguments and, where the family has them, the block strings ``decode_arch_def`` reads) and
:func:`build_timm` builds it with timm, ready for the sub-network's weights.

What each timm model family can write (every sample, or only some) is said in its module
(:mod:`.efficientnet`, :mod:`.resnet`); this module holds what they share and dispatches on the
definition's ``model`` to the family registered for it (:data:`.family.FAMILIES`).

Whatever cannot be expressed raises ``ValueError`` saying why, and every definition is checked
by building it: timm's modules must match the sub-network's one by one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import create_act_layer, get_act_layer
from torch import nn

from ..io import write_json
from ..sidecars import SIDECARS, Sidecar
from .family import MODELS, family_of

TIMM_FORMAT = "nas_aug.timm/1"
TIMM_FILE = "timm.json"
# timm activation names, first match wins
_ACTS = ("relu", "relu6", "hard_swish", "silu", "mish", "gelu", "gelu_tanh", "hard_sigmoid",
         "sigmoid", "tanh", "leaky_relu", "elu", "celu", "selu", "quick_gelu")


def find_timm_model(net: nn.Module) -> tuple[str, nn.Module]:
    """The key prefix and the one timm model of a registered family (:data:`MODELS`) in
    ``net`` (``net`` itself, or a module holding it and no other weights)."""
    found = [(name, m) for name, m in net.named_modules() if type(m) in MODELS.values()]
    if len(found) != 1:
        what = "is not and holds no" if not found else f"holds {len(found)}"
        raise ValueError(f"the sub-network ({type(net).__name__}) {what} timm "
                         f"{' / '.join(MODELS)} model; a timm export needs exactly one")
    name, model = found[0]
    prefix = f"{name}." if name else ""
    outside = [key for key in net.state_dict() if not key.startswith(prefix)]
    if outside:
        raise ValueError(f"the sub-network holds weights outside its timm model {name!r} "
                         f"({', '.join(outside[:3])}...), which timm would not build")
    return prefix, model


def _act(module: nn.Module) -> tuple[str, list[str]]:
    parts = [p for p in module.extra_repr().split(", ") if p and not p.startswith("inplace=")]
    return type(module).__name__, parts


def act_name(module: nn.Module, where: str) -> str:
    """The timm name (``get_act_layer``) of the activation ``module``."""
    for name in _ACTS:
        if _act(create_act_layer(name)) == _act(module):
            return name
    raise ValueError(f"{where} is {module!r}, an activation with no timm name among {_ACTS}")


def norm_args(norm: nn.Module, where: str, with_act: bool) -> dict[str, float]:
    """The ``norm_layer`` arguments of the batch norm ``norm`` (timm's ``BatchNormAct2d`` if
    ``with_act``, else ``nn.BatchNorm2d``)."""
    expected = "BatchNormAct2d" if with_act else "BatchNorm2d"
    if type(norm).__name__ != expected or not norm.affine or not norm.track_running_stats:
        raise ValueError(f"{where} is {type(norm).__name__}: the timm export writes "
                         f"{expected} layers (affine, with running statistics) only")
    return {"eps": norm.eps, "momentum": norm.momentum}


def timm_definition(net: nn.Module) -> dict[str, Any]:
    """timm's definition of ``net``, a standalone (extracted) sub-network that is, or holds, a
    timm model of a registered family (``MobileNetV3``, ``EfficientNet``, ``ResNet``): plain
    JSON data with the class (``model``; ``class``, where to import it from), the timm version
    that wrote it, constructor ``kwargs`` (activations by timm name, for ``get_act_layer``),
    ``block_args`` (block strings per stage, the input of ``decode_arch_def``; ``None`` for a
    ResNet), the arguments of ``norm_layer`` (``nn.BatchNorm2d``) and ``se_layer`` (timm's
    ``SqueezeExcite``: its gate and forced activation, by timm name), and the ``prefix`` of the
    timm model's keys in ``net.state_dict()`` (``""`` in an export, whose weights are timm's).
    ``ValueError`` says why timm cannot build it.

    >>> import timm
    >>> net = timm.create_model("mobilenetv3_small_050", num_classes=10)
    >>> definition = timm_definition(net)
    >>> definition["model"], definition["block_args"][1]
    ('MobileNetV3', ['ir_r1_k3_s2_e5_c16_nre', 'ir_r1_k3_s1_e3.5_c16_nre'])
    >>> build_timm(definition).load_state_dict(net.state_dict())
    <All keys matched successfully>
    """
    prefix, model = find_timm_model(net)
    data = family_of(type(model).__name__).definition(model)
    kind = type(model)
    definition = {"format": TIMM_FORMAT, "class": f"{kind.__module__}.{kind.__name__}",
                  "timm_version": timm.__version__, **data, "prefix": prefix}
    _check_structure(model, build_timm(definition))
    return definition


def build_timm(definition: Mapping[str, Any]) -> nn.Module:
    """The timm model of a :func:`timm_definition` (freshly initialised): its ``model`` class
    built by the family registered for it from ``kwargs`` (and ``block_args``, ``se_layer``
    where the family has them), with ``act_layer`` resolved by ``get_act_layer`` and
    ``norm_layer=partial(nn.BatchNorm2d, **norm_layer)``."""
    kind = definition.get("model")
    family = family_of(kind)
    kwargs = dict(definition["kwargs"])
    kwargs["act_layer"] = get_act_layer(kwargs["act_layer"])
    kwargs["norm_layer"] = partial(nn.BatchNorm2d, **definition["norm_layer"])
    return family.build(MODELS[kind], kwargs, definition)


def timm_weights(state: Mapping[str, torch.Tensor], definition: Mapping[str, Any]
                 ) -> dict[str, torch.Tensor]:
    """The sub-network's ``state`` with the keys of :func:`build_timm`'s model."""
    prefix = definition.get("prefix", "")
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.Dropout) or type(module).__name__ in ("DropPath", "Identity"):
        return "Identity"  # the same in eval mode
    parts = [p for p in module.extra_repr().split(", ")
             if p and not p.startswith(("inplace=", "momentum="))]
    for flag in ("has_skip", "has_pw_act"):
        if hasattr(module, flag):
            parts.append(f"{flag}={getattr(module, flag)}")
    return f"{type(module).__name__}({', '.join(parts)})"


def _check_structure(model: nn.Module, built: nn.Module) -> None:
    ours, theirs = dict(model.named_modules()), dict(built.named_modules())
    for name in [*ours, *(n for n in theirs if n not in ours)]:
        mine = _describe(ours[name]) if name in ours else "nothing"
        timms = _describe(theirs[name]) if name in theirs else "nothing"
        if mine != timms:
            raise ValueError(f"timm would build {name or 'the model'} as {timms} where the "
                             f"sub-network has {mine}")


@contextlib.contextmanager
def _evaluating(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode without gradients; every module's mode is restored after."""
    modes = {m: m.training for m in net.modules()}
    try:
        with torch.no_grad():
            yield net.eval()
    finally:
        for module, training in modes.items():
            module.train(training)


def _runs_only(net: nn.Module, model: nn.Module, inputs: torch.Tensor) -> bool:
    """Whether ``net``'s forward on ``inputs`` is exactly ``model``'s on them."""
    seen: list = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append((args, out)))
    try:
        with _evaluating(net):
            output = net(inputs)
    finally:
        handle.remove()
    return len(seen) == 1 and seen[0][0][0] is inputs and seen[0][1] is output


def timm_part(net: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """The one timm model of a registered family inside ``net`` when running it is all
    ``net``'s forward does (so its weights can be written under timm's own names), else
    ``net``."""
    try:
        _, model = find_timm_model(net)
    except ValueError:
        return net
    return model if model is net or _runs_only(net, model, inputs) else net


def check_timm(net: nn.Module, definition: Mapping[str, Any], inputs: torch.Tensor) -> float:
    """Build ``definition`` with timm, load ``net``'s weights (strict) and return the largest
    absolute difference between its outputs and ``net``'s on ``inputs`` (eval mode, on the
    device of ``inputs``). ``ValueError`` if ``net``'s forward is more than its timm model's."""
    prefix, model = find_timm_model(net)
    built = build_timm(definition)
    built.load_state_dict(timm_weights(net.state_dict(), definition))
    weight = next(net.parameters())
    built = built.to(inputs.device, weight.dtype).eval()
    if not _runs_only(net, model, inputs):
        raise ValueError(f"the sub-network's forward ({type(net).__name__}) does more than "
                         f"run its timm model {prefix[:-1]!r} on the input")
    with _evaluating(net):  # no gradients for built either
        output, expected = net(inputs), built(inputs)
    return (output - expected).abs().max().item()


def check_exportable(supernet: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Refuse (``ValueError``) a supernet holding a timm model whose sub-networks the export
    could not write back as timm definitions, before anything is trained: its largest and
    smallest samples must both have one. The families leave every width timm cannot build out
    of the space, so the samples between them then have one too."""
    from ..supernet import extract_subnet, space_of

    space, example = space_of(supernet), torch.zeros(1, *input_shape)
    for which, sample in (("largest", space.largest()), ("smallest", space.smallest())):
        try:
            timm_definition(extract_subnet(supernet, sample, example))
        except ValueError as err:
            raise ValueError(
                f"the {which} sub-network of this timm supernet could not be exported back to "
                f"timm ({err}), so no searched architecture could be rebuilt outside this "
                "process; elasticize only the timm model (OneShotNAS(elastic=...) finds it "
                "inside your LightningModule) and keep to the blocks the timm export "
                "writes") from None


def write_timm_sidecar(directory: Path, supernet: nn.Module, subnet: nn.Module,
                       result: Any) -> None:
    """Write ``timm.json`` if ``subnet`` is (or runs) a timm model of a registered family
    that timm can build, checked on a batch; warn why not when it holds one timm cannot."""
    if not any(type(m) in MODELS.values() for m in subnet.modules()):
        return
    weight = next(subnet.parameters())
    inputs = torch.rand(2, *result.input_shape, generator=torch.Generator().manual_seed(0))
    try:
        definition = timm_definition(subnet)
        difference = check_timm(subnet, definition, inputs.to(weight.device, weight.dtype))
    except ValueError as err:
        warnings.warn(f"no {TIMM_FILE} in {directory}: {err}", stacklevel=4)
        return
    if difference > 1e-4:
        warnings.warn(f"no {TIMM_FILE} in {directory}: timm's build of the sub-network gives "
                      f"outputs {difference:.3g} away from it", stacklevel=4)
        return
    write_json(directory / TIMM_FILE, definition)


SIDECARS.add("timm", Sidecar(TIMM_FILE, write_timm_sidecar))
