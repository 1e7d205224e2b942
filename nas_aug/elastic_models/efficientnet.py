"""timm's MobileNetV3 / EfficientNet family (``timm.models.MobileNetV3``, ``EfficientNet``
and every model built from ``timm.models._efficientnet_blocks``).

* ``InvertedResidual`` (MBConv): width of the expansion (``conv_pw`` → ``bn1`` → ``conv_dw``
  → ``bn2`` → squeeze-excite → ``conv_pwl``'s input), kernel of ``conv_dw``;
* ``EdgeResidual`` (FusedMBConv): width of the expansion (``conv_exp`` → ``bn1`` → squeeze-
  excite → ``conv_pwl``'s input); its expansion conv is not depthwise, so no elastic kernel;
* ``DepthwiseSeparableConv``, and ``ConvBnAct`` whose conv is depthwise: kernel only (their
  width is the block's input width, which stays fixed).

The squeeze-excite's reduced width stays fixed; its input and output follow the block width.
"""

from __future__ import annotations

from timm.models._efficientnet_blocks import (
    CondConvResidual,
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
    MobileAttention,
    SqueezeExcite,
    UniversalInvertedResidual,
)
from torch import nn

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
from .spec import BlockRule, ElasticSpec, Family


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
    width = width_choice(f"{name}.width", [mid], spec)
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


FAMILY = Family(
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
)
