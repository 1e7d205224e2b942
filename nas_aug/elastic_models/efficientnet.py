"""timm's MobileNetV3 / EfficientNet family (``timm.models.MobileNetV3``, ``EfficientNet``
and every model built from ``timm.models._efficientnet_blocks``).

* ``InvertedResidual`` (MBConv): width of the expansion (``conv_pw`` → ``bn1`` → ``conv_dw``
  → ``bn2`` → squeeze-excite → ``conv_pwl``'s input), kernel of ``conv_dw``;
* ``EdgeResidual`` (FusedMBConv): width of the expansion (``conv_exp`` → ``bn1`` → squeeze-
  excite → ``conv_pwl``'s input); its expansion conv is not depthwise, so no elastic kernel;
* ``DepthwiseSeparableConv``, and ``ConvBnAct`` whose conv is depthwise: kernel only (their
  width is the block's input width, which stays fixed).

The squeeze-excite's reduced width stays fixed; its input and output follow the block width.

The timm export (blocks ``ds``/``dsa``, ``ir``, ``er``, ``cn``) writes every sample: widths timm
cannot build (an expanded width that is not a multiple of 8, from a spec's smaller ``divisor``)
are left out of the space when it is built, and said so. Each expansion ratio is written so
that timm's rounding (``make_divisible(in_chs * exp_ratio)``) gives the sampled width, and
each squeeze-excite ratio so that timm gives its (fixed) reduced width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from timm.layers import Conv2dSame, get_act_layer, make_divisible
from timm.models import EfficientNet, MobileNetV3
from torch import nn

from ._timm import (
    CondConvResidual,
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
    MobileAttention,
    SqueezeExcite,
    UniversalInvertedResidual,
    decode_arch_def,
)
from .family import BlockRule, Family, register
from .layers import (
    act_problem,
    block_problem,
    conv_problem,
    elastic_conv,
    elastic_norm,
    kernel_choice,
    scaled,
    width_choice,
)
from .spec import ElasticSpec
from .timm_export import act_name, norm_args


def _se_problem(se: nn.Module) -> str | None:
    if isinstance(se, nn.Identity):
        return None
    if type(se) is not SqueezeExcite:
        return f"its squeeze-excite is a {type(se).__name__}, not timm's SqueezeExcite"
    return (conv_problem(se.conv_reduce, "se.conv_reduce")
            or conv_problem(se.conv_expand, "se.conv_expand") or act_problem(se.act1, "se.act1"))


def _width_problem(block: nn.Module, expand: str, norms: tuple[str, ...], dw: str | None
                   ) -> str | None:
    """Why the expanded width of ``block`` cannot be elastic, or ``None``."""
    if getattr(block, "conv_s2d", None) is not None:
        return "it starts with a space-to-depth conv"
    convs = tuple(role for role in (expand, dw, "conv_pwl") if role is not None)
    return block_problem(block, convs, (expand,), norms) or _se_problem(block.se)


def _timm_builds(channels: int) -> bool:
    """Whether timm can build an expanded width of ``channels``: it rounds ``in_chs *
    exp_ratio`` to a multiple of 8 (``make_divisible``), so every other width is out of the
    space (its sub-networks could not be exported)."""
    return make_divisible(channels) == channels


def _make_wide(name: str, block: nn.Module, spec: ElasticSpec, expand: str,
               norms: tuple[str, ...], problems: list[str]):
    """The width choice of ``block`` (``None`` if none), after converting its expansion conv,
    the norms and the squeeze-excite; ``conv_pwl`` reads the width from its input."""
    if len(spec.width) == 0 or spec.width == (1.0,):
        return None
    problem = _width_problem(block, expand, norms, "conv_dw" if expand == "conv_pw" else None)
    if problem:
        problems.append(f"width: {problem}")
        return None
    mid = getattr(block, expand).out_channels
    width, left_out = width_choice(f"{name}.width", [mid], spec, builds=_timm_builds)
    if left_out:
        problems.append(f"{left_out} (it rounds expanded widths to multiples of 8)")
    if width is None:
        return None
    setattr(block, expand, elastic_conv(getattr(block, expand), out=scaled(width, mid, spec)))
    for role in norms:
        setattr(block, role, elastic_norm(getattr(block, role)))
    if isinstance(block.se, SqueezeExcite):
        block.se.conv_reduce = elastic_conv(block.se.conv_reduce)
        block.se.conv_expand = elastic_conv(block.se.conv_expand, out=scaled(width, mid, spec))
    block.conv_pwl = elastic_conv(block.conv_pwl)
    return width


def _convert_inverted_residual(name: str, block: InvertedResidual, spec: ElasticSpec
                               ) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    kernel, kernel_problem = kernel_choice(f"{name}.kernel", block.conv_dw, spec)
    if kernel_problem:
        problems.append(kernel_problem)
    width = _make_wide(name, block, spec, "conv_pw", ("bn1", "bn2"), problems)
    if width is not None or kernel is not None:
        block.conv_dw = elastic_conv(block.conv_dw, kernel=kernel)
    return [c.label for c in (width, kernel) if c is not None], problems


def _convert_edge_residual(name: str, block: EdgeResidual, spec: ElasticSpec
                           ) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    width = _make_wide(name, block, spec, "conv_exp", ("bn1",), problems)
    return ([width.label] if width is not None else []), problems


def _convert_depthwise(role: str):
    """Kernel only, for a block whose depthwise conv is ``role``."""

    def convert(name: str, block: nn.Module, spec: ElasticSpec) -> tuple[list[str], list[str]]:
        conv = getattr(block, role)
        if isinstance(block, ConvBnAct) and getattr(conv, "groups", None) == 1:
            return [], []  # a plain conv block: no inner width, no depthwise kernel
        kernel, problem = kernel_choice(f"{name}.kernel", conv, spec)
        if kernel is not None:
            setattr(block, role, elastic_conv(conv, kernel=kernel))
        return ([kernel.label] if kernel is not None else []), [problem] if problem else []

    return convert


def _keeps_shape(first: str, last: str):
    """Whether a block (whose first and last convs are ``first`` and ``last``) gives an output
    of its input's shape: no stride, no space-to-depth, as many channels out as in."""

    def keeps_shape(block: nn.Module) -> bool:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        return (getattr(block, "conv_s2d", None) is None and isinstance(block.aa, nn.Identity)
                and all(c.stride == (1, 1) for c in convs)
                and getattr(block, first).in_channels == getattr(block, last).out_channels)

    return keeps_shape


# The timm export: block strings (what decode_arch_def reads) and constructor arguments.

# the block-string suffixes ("_nre", ...) that switch a block's activation
_SUFFIXES = {"relu": "re", "relu6": "r6", "hard_swish": "hs", "silu": "sw", "mish": "mi"}


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



def _definition(model: nn.Module) -> dict[str, Any]:
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
            "norm_layer": norm_args(model.bn1, "bn1", with_act=True),
            "se_layer": blocks.se_layer()}


def _build(model: type[nn.Module], kwargs: dict[str, Any], definition: Mapping[str, Any]
           ) -> nn.Module:
    """``model(block_args=decode_arch_def(block_args), **kwargs)``, with ``se_layer=partial(
    SqueezeExcite, **se_layer)``."""
    se = definition.get("se_layer")
    if se:
        kwargs["se_layer"] = partial(SqueezeExcite, gate_layer=get_act_layer(se["gate_layer"]),
                                     force_act_layer=get_act_layer(se["force_act_layer"]))
    return model(block_args=decode_arch_def(definition["block_args"]), **kwargs)


FAMILY = register(Family(
    name="MobileNetV3 / EfficientNet",
    blocks={
        InvertedResidual: BlockRule(_convert_inverted_residual,
                                    _keeps_shape("conv_pw", "conv_pwl")),
        EdgeResidual: BlockRule(_convert_edge_residual, _keeps_shape("conv_exp", "conv_pwl")),
        DepthwiseSeparableConv: BlockRule(_convert_depthwise("conv_dw"),
                                          _keeps_shape("conv_dw", "conv_pw")),
        ConvBnAct: BlockRule(_convert_depthwise("conv"), _keeps_shape("conv", "conv")),
    },
    unsupported={
        CondConvResidual: "its convs are CondConv2d (per-sample expert weights)",
        UniversalInvertedResidual: "no converter yet for MobileNetV4's universal inverted "
                                   "residual",
        MobileAttention: "no converter for attention blocks",
    },
    models=(MobileNetV3, EfficientNet),
    definition=_definition,
    build=_build,
))
