"""Take a sub-network of an elasticized timm model back to timm: :func:`timm_definition`
writes timm's own architecture definition as plain JSON data (the model class, its constructor
arguments and, for MobileNetV3 / EfficientNet, the block strings ``decode_arch_def`` reads) and
:func:`build_timm` builds it with timm, ready for the sub-network's weights.

* ``MobileNetV3`` / ``EfficientNet`` (blocks ``ds``/``dsa``, ``ir``, ``er``, ``cn``): every
  width, kernel and depth an elastic spec with ``divisor=8`` samples. Each expansion ratio is
  written so that timm's rounding (``make_divisible(in_chs * exp_ratio)``) gives the sampled
  width, and each squeeze-excite ratio so that timm gives its (fixed) reduced width;
* ``ResNet``: depth samples. timm's ResNet derives every block's inner width from its stage
  and network-wide arguments (``channels``, ``base_width``), so a sample that narrows a block
  is refused (unless it narrows every Bottleneck alike, which ``base_width`` expresses).

Whatever cannot be expressed raises ``ValueError`` saying why, and every definition is checked
by building it: timm's modules must match the sub-network's one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from timm.layers import Conv2dSame, create_act_layer, get_act_layer, make_divisible
from timm.models import EfficientNet, MobileNetV3, ResNet
from timm.models._efficientnet_blocks import (
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
    SqueezeExcite,
)
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

TIMM_FORMAT = "nas_aug.timm/1"
MODELS: dict[str, type[nn.Module]] = {"MobileNetV3": MobileNetV3, "EfficientNet": EfficientNet,
                                      "ResNet": ResNet}
RESNET_BLOCKS: dict[str, type[nn.Module]] = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
# timm activation names, first match wins; the block-string suffixes ("_nre", ...) timm knows
_ACTS = ("relu", "relu6", "hard_swish", "silu", "mish", "gelu", "gelu_tanh", "hard_sigmoid",
         "sigmoid", "tanh", "leaky_relu", "elu", "celu", "selu", "quick_gelu")
_SUFFIXES = {"relu": "re", "relu6": "r6", "hard_swish": "hs", "silu": "sw", "mish": "mi"}


def find_timm_model(net: nn.Module) -> tuple[str, nn.Module]:
    """The key prefix and the one timm ``MobileNetV3`` / ``EfficientNet`` / ``ResNet`` in
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


def _norm(norm: nn.Module, where: str, with_act: bool) -> dict[str, float]:
    expected = "BatchNormAct2d" if with_act else "BatchNorm2d"
    if type(norm).__name__ != expected or not norm.affine or not norm.track_running_stats:
        raise ValueError(f"{where} is {type(norm).__name__}: the timm export writes "
                         f"{expected} layers (affine, with running statistics) only")
    return {"eps": norm.eps, "momentum": norm.momentum}


def _number(exact: float, fits: Callable[[float], bool], what: str) -> str:
    """The shortest decimal string (for a block string) whose value ``fits``."""
    for decimals in range(17):
        text = f"{exact:.{decimals}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        if float(text) > 0 and fits(float(text)):
            return text
    if fits(exact):
        return repr(exact)
    raise ValueError(what)


def _kernel(conv: nn.Conv2d, where: str) -> int:
    (kh, kw), (sh, sw), dilation = conv.kernel_size, conv.stride, conv.dilation
    if kh != kw or sh != sw or dilation != (1, 1):
        raise ValueError(f"{where} has kernel {conv.kernel_size}, stride {conv.stride} and "
                         f"dilation {dilation}: block strings hold square kernels and strides, "
                         "without dilation")
    return kh


def _expansion(where: str, in_chs: int, mid: int) -> str:
    return _number(mid / in_chs, lambda e: make_divisible(in_chs * e) == mid,
                   f"{where} has {mid} expanded channels from {in_chs} input channels: timm "
                   f"rounds the expanded width to a multiple of 8 (make_divisible(in_chs * "
                   f"exp_ratio)), so no exp_ratio gives {mid} (elasticize with divisor=8)")


class _Blocks:
    """Block strings for the blocks of one ``MobileNetV3`` / ``EfficientNet``, and what its
    squeeze-excite layers share (gate, activation)."""

    def __init__(self, se_from_exp: bool, act: str):
        self.se_from_exp, self.act = se_from_exp, act
        self.gates: set[str] = set()
        self.se_acts: set[str] = set()
        self.se_forced = False

    def _se(self, where: str, se: nn.Module, chs: int, exp: str | None, act: str) -> list[str]:
        if isinstance(se, nn.Identity):
            return []
        if type(se) is not SqueezeExcite:
            raise ValueError(f"{where}.se is a {type(se).__name__}, not timm's SqueezeExcite")
        rd = se.conv_reduce.out_channels
        divide = 1.0 if self.se_from_exp or exp is None else float(exp)
        self.gates.add(act_name(se.gate, f"{where}.se.gate"))
        se_act = act_name(se.act1, f"{where}.se.act1")
        self.se_acts.add(se_act)
        self.se_forced |= se_act != act
        return ["se" + _number(rd * divide / chs, lambda s: round(chs * (s / divide)) == rd,
                               f"{where}.se has {rd} reduced channels, which no ratio of "
                               f"{chs} gives")]

    def _act(self, where: str, *acts: nn.Module) -> tuple[str, list[str]]:
        names = {act_name(a, f"{where} activation") for a in acts}
        if len(names) != 1:
            raise ValueError(f"{where} mixes the activations {sorted(names)}; a block string "
                             "gives a block one")
        name = names.pop()
        if name == self.act:
            return name, []
        if name not in _SUFFIXES:
            raise ValueError(f"{where} uses {name} where the model uses {self.act}: a block "
                             f"string can only switch to {sorted(_SUFFIXES)}")
        return name, [f"n{_SUFFIXES[name]}"]

    def string(self, where: str, block: nn.Module) -> tuple[str, tuple[str, ...], int,
                                                            tuple[str, ...]]:
        """A block's string in parts: type, the options before the stride, the stride, the
        options after it (``ir`` | ``k5`` | ``s2`` | ``e6_c24_se0.25``)."""
        if getattr(block, "conv_s2d", None) is not None or not isinstance(
                getattr(block, "aa", nn.Identity()), nn.Identity):
            raise ValueError(f"{where} has a space-to-depth or anti-aliasing layer, which the "
                             "timm export does not write")
        kind = type(block)
        if kind is InvertedResidual:
            pw, dw, pwl = block.conv_pw, block.conv_dw, block.conv_pwl
            in_chs, mid, out = pw.in_channels, pw.out_channels, pwl.out_channels
            act, opts = self._act(where, block.bn1.act, block.bn2.act)
            exp = _expansion(where, in_chs, mid)
            head = ["ir", f"k{_kernel(dw, where)}"]
            tail = [f"e{exp}", f"c{out}"] + self._se(where, block.se, mid, exp, act) + opts
            tail += [f"a{_kernel(pw, where)}"] if pw.kernel_size[0] != 1 else []
            groups, stride = dw.groups, dw.stride[0]
            gs = mid // groups if groups != mid else None
        elif kind is EdgeResidual:
            exp_conv, pwl = block.conv_exp, block.conv_pwl
            in_chs, mid, out = exp_conv.in_channels, exp_conv.out_channels, pwl.out_channels
            act, opts = self._act(where, block.bn1.act)
            exp = _expansion(where, in_chs, mid)
            head = ["er", f"k{_kernel(exp_conv, where)}"]
            tail = [f"e{exp}", f"c{out}"] + self._se(where, block.se, mid, exp, act) + opts
            groups, stride = exp_conv.groups, exp_conv.stride[0]
            gs = mid // groups if groups != 1 else None
        elif kind is DepthwiseSeparableConv:
            dw, pwl = block.conv_dw, block.conv_pw
            in_chs, out = dw.in_channels, pwl.out_channels
            pw_act = not isinstance(block.bn2.act, nn.Identity)
            act, opts = self._act(where, block.bn1.act, *([block.bn2.act] if pw_act else []))
            head = ["dsa" if pw_act else "ds", f"k{_kernel(dw, where)}"]
            tail = [f"c{out}"] + self._se(where, block.se, in_chs, None, act) + opts
            groups, stride = dw.groups, dw.stride[0]
            gs = in_chs // groups if groups != in_chs else None
            if pw_act and block.has_skip:
                raise ValueError(f"{where} has an activation after its pointwise conv and a "
                                 "skip connection; timm's 'dsa' blocks have no skip")
        elif kind is ConvBnAct:
            conv, pwl = block.conv, None
            in_chs, out = conv.in_channels, conv.out_channels
            _, opts = self._act(where, block.bn1.act)
            head, tail = ["cn", f"k{_kernel(conv, where)}"], [f"c{out}"] + opts
            groups, stride = conv.groups, conv.stride[0]
            gs = in_chs // groups if groups != 1 else None
        else:
            raise ValueError(f"{where} is a {kind.__name__}; the timm export writes timm's "
                             "DepthwiseSeparableConv, InvertedResidual, EdgeResidual and "
                             "ConvBnAct blocks")
        if pwl is not None and pwl.kernel_size[0] != 1:
            tail.append(f"p{_kernel(pwl, where)}")
        if gs is not None:
            tail.append(f"gs{gs}")
        natural_skip = stride == 1 and in_chs == out
        if kind is ConvBnAct:
            tail += ["skip"] if block.has_skip else []
        elif natural_skip and not block.has_skip and head[0] != "dsa":
            tail.append("noskip")
        return head[0], tuple(head[1:]), stride, tuple(tail)

    def stage(self, name: str, stage: nn.Module) -> list[str]:
        """One stage's block strings, consecutive equal blocks merged (``_r3``: timm gives the
        first block of a run its stride and the others stride 1)."""
        runs: list[list] = []  # [parts, repeats]
        for index, block in enumerate(stage):
            parts = self.string(f"{name}.{index}", block)
            kind, before, stride, after = parts
            if runs and runs[-1][0][:2] + runs[-1][0][3:] == (kind, before, after) and stride == 1:
                runs[-1][1] += 1
            else:
                runs.append([parts, 1])
        return ["_".join([kind, f"r{repeat}", *before, f"s{stride}", *after])
                for (kind, before, stride, after), repeat in runs]

    def se_layer(self) -> dict[str, Any] | None:
        if not self.gates:
            return None
        if len(self.gates) > 1 or (self.se_forced and len(self.se_acts) > 1):
            raise ValueError(f"the squeeze-excite layers differ (gates {sorted(self.gates)}, "
                             f"activations {sorted(self.se_acts)}); timm builds them alike")
        forced = self.se_acts.copy().pop() if self.se_forced else None
        return {"gate_layer": self.gates.copy().pop(), "force_act_layer": forced}


def _efficientnet(model: nn.Module) -> dict[str, Any]:
    kind = type(model).__name__
    act = act_name(model.bn1.act, "bn1.act")
    blocks = _Blocks(se_from_exp=kind == "MobileNetV3", act=act)
    block_args = [blocks.stage(f"blocks.{i}", stage) for i, stage in enumerate(model.blocks)]
    same = any(isinstance(m, Conv2dSame) for m in model.modules())
    kwargs: dict[str, Any] = {
        "num_classes": model.num_classes, "in_chans": model.conv_stem.in_channels,
        "stem_size": model.conv_stem.out_channels, "fix_stem": True,
        "pad_type": "same" if same else "", "act_layer": act, "drop_rate": model.drop_rate,
        "global_pool": model.global_pool.pool_type}
    if kind == "MobileNetV3":
        kwargs.update(num_features=model.conv_head.out_channels,
                      head_bias=model.conv_head.bias is not None,
                      head_norm=not isinstance(model.norm_head, nn.Identity))
    else:
        head = isinstance(model.conv_head, nn.Conv2d)
        kwargs.update(num_features=model.conv_head.out_channels if head else 0,
                      stem_kernel_size=_kernel(model.conv_stem, "conv_stem"))
    return {"model": kind, "kwargs": kwargs, "block_args": block_args,
            "norm_layer": _norm(model.bn1, "bn1", with_act=True),
            "se_layer": blocks.se_layer()}


def _resnet(model: ResNet) -> dict[str, Any]:
    stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    kinds = [type(stage[0]).__name__ for stage in stages]
    if any(type(b) is not type(stage[0]) or type(b) not in RESNET_BLOCKS.values()
           for stage in stages for b in stage):
        raise ValueError("the timm export writes ResNets whose stages are all BasicBlock or "
                         "all Bottleneck blocks")
    for name, block in ((f"layer{s + 1}.{b}", block) for s, stage in enumerate(stages)
                        for b, block in enumerate(stage)):
        if getattr(block, "se", None) is not None or not isinstance(block.aa, nn.Identity):
            raise ValueError(f"{name} has an attention or anti-aliasing layer, which the timm "
                             "export does not write")
    planes = [stage[0].conv2.out_channels if kind == "BasicBlock"
              else stage[0].conv3.out_channels // 4 for stage, kind in zip(stages, kinds)]
    bottlenecks = [(p, b) for stage, p in zip(stages, planes) for b in stage
                   if type(b) is Bottleneck]
    cardinality = bottlenecks[0][1].conv2.groups if bottlenecks else 1
    # base_width: the widest bottleneck's (width = int(planes * base_width / 64) * cardinality)
    base_width = max((next(w for w in range(1, 64 * b.conv2.out_channels + 1)
                           if int(p * (w / 64)) * cardinality >= b.conv2.out_channels)
                      for p, b in bottlenecks), default=64)
    for s, (stage, p) in enumerate(zip(stages, planes)):
        expected = p if kinds[s] == "BasicBlock" else int(p * (base_width / 64)) * cardinality
        for b, block in enumerate(stage):
            if block.conv1.out_channels != expected:
                raise ValueError(
                    f"layer{s + 1}.{b} is {block.conv1.out_channels} channels wide inside, "
                    f"where timm's ResNet makes every {kinds[s]} of layer{s + 1} {expected} "
                    "wide (from its channels, base_width and cardinality): timm cannot build "
                    "per-block widths, so only samples that keep every block's width (depth "
                    "samples) export")
    down = next((s[0].downsample for s in stages if s[0].downsample is not None), None)
    deep = isinstance(model.conv1, nn.Sequential)
    stem_type = ("deep_tiered" if model.conv1[0].out_channels != model.conv1[3].out_channels
                 else "deep") if deep else ""
    kwargs: dict[str, Any] = {
        "block": kinds, "layers": [len(stage) for stage in stages], "channels": planes,
        "num_classes": model.num_classes, "in_chans": model.in_chans,
        "stem_width": model.conv1[3].out_channels if deep else 64, "stem_type": stem_type,
        "replace_stem_pool": isinstance(model.maxpool, nn.Sequential),
        "cardinality": cardinality, "base_width": base_width,
        "avg_down": down is not None and len(down) == 3,
        "down_kernel_size": 1 if down is None else down[-2].kernel_size[0],
        "act_layer": act_name(model.act1, "act1"), "drop_rate": model.drop_rate,
        "global_pool": model.global_pool.pool_type}
    return {"model": "ResNet", "kwargs": kwargs, "block_args": None,
            "norm_layer": _norm(model.bn1, "bn1", with_act=False), "se_layer": None}


def timm_definition(net: nn.Module) -> dict[str, Any]:
    """timm's definition of ``net``, a standalone (extracted) sub-network that is, or holds, a
    timm ``MobileNetV3``, ``EfficientNet`` or ``ResNet``: plain JSON data with the class
    (``model``), constructor ``kwargs``, ``block_args`` (block strings per stage, the input of
    ``decode_arch_def``; ``None`` for a ResNet), the ``norm_layer`` / ``se_layer`` arguments and
    the ``prefix`` of the timm model's keys in ``net.state_dict()``. ``ValueError`` says why
    timm cannot build it.

    >>> import timm
    >>> net = timm.create_model("mobilenetv3_small_050", num_classes=10)
    >>> definition = timm_definition(net)
    >>> definition["model"], definition["block_args"][1]
    ('MobileNetV3', ['ir_r1_k3_s2_e5_c16_nre', 'ir_r1_k3_s1_e3.5_c16_nre'])
    >>> build_timm(definition).load_state_dict(net.state_dict())
    <All keys matched successfully>
    """
    prefix, model = find_timm_model(net)
    data = _resnet(model) if type(model) is ResNet else _efficientnet(model)
    definition = {"format": TIMM_FORMAT, **data, "prefix": prefix}
    _check_structure(model, build_timm(definition))
    return definition


def build_timm(definition: Mapping[str, Any]) -> nn.Module:
    """The timm model of a :func:`timm_definition` (freshly initialised): ``MobileNetV3(
    block_args=decode_arch_def(block_args), **kwargs)`` (or ``EfficientNet`` / ``ResNet``),
    with activation names resolved by ``get_act_layer``, ``norm_layer=partial(nn.BatchNorm2d,
    **norm_layer)`` and ``se_layer=partial(SqueezeExcite, **se_layer)``."""
    kind = definition.get("model")
    if kind not in MODELS:
        raise ValueError(f"timm definition of an unknown model {kind!r}; known: {sorted(MODELS)}")
    kwargs = dict(definition["kwargs"])
    kwargs["act_layer"] = get_act_layer(kwargs["act_layer"])
    kwargs["norm_layer"] = partial(nn.BatchNorm2d, **definition["norm_layer"])
    if kind == "ResNet":
        kwargs["block"] = [RESNET_BLOCKS[name] for name in kwargs["block"]]
        kwargs["layers"], kwargs["channels"] = tuple(kwargs["layers"]), tuple(kwargs["channels"])
        return ResNet(**kwargs)
    se = definition.get("se_layer")
    if se:
        kwargs["se_layer"] = partial(SqueezeExcite, gate_layer=get_act_layer(se["gate_layer"]),
                                     force_act_layer=get_act_layer(se["force_act_layer"]))
    return MODELS[kind](block_args=decode_arch_def(definition["block_args"]), **kwargs)


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


def check_timm(net: nn.Module, definition: Mapping[str, Any], inputs: torch.Tensor) -> float:
    """Build ``definition`` with timm, load ``net``'s weights (strict) and return the largest
    absolute difference between its outputs and ``net``'s on ``inputs`` (eval mode, on the
    device of ``inputs``). ``ValueError`` if ``net``'s forward is more than its timm model's."""
    prefix, model = find_timm_model(net)
    built = build_timm(definition)
    built.load_state_dict(timm_weights(net.state_dict(), definition))
    weight = next(net.parameters())
    built = built.to(inputs.device, weight.dtype).eval()
    seen: list = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append((args, out)))
    modes = {m: m.training for m in net.modules()}
    try:
        with torch.no_grad():
            output = net.eval()(inputs)
            expected = built(inputs)
    finally:
        handle.remove()
        for module, training in modes.items():
            module.train(training)
    if len(seen) != 1 or seen[0][0][0] is not inputs or seen[0][1] is not output:
        raise ValueError(f"the sub-network's forward ({type(net).__name__}) does more than "
                         f"run its timm model {prefix[:-1]!r} on the input")
    return (output - expected).abs().max().item()
