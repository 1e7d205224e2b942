"""Turning single torch / timm layers into elastic ones that share the original weights.

Each converter keeps the original ``Parameter`` and buffer objects, so the elastic layer at its
largest configuration computes exactly what the original did. The ``*_problem`` functions say
why a layer cannot be converted (``None`` if it can).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from timm.layers import BatchNormAct2d, make_divisible
from torch import nn

from ..space import ElasticBatchNorm2d, ElasticConv2d, MappedChoice, ValueChoice
from ..space.modules import _require_shape
from .spec import ElasticSpec


class ElasticBatchNormAct2d(ElasticBatchNorm2d):
    """timm's ``BatchNormAct2d`` (batch norm, then ``drop`` and ``act``) over the first ``C``
    channels; frozen, it is a ``BatchNormAct2d`` again.

    >>> import torch
    >>> norm = ElasticBatchNormAct2d(8, act=nn.ReLU())
    >>> norm(torch.randn(2, 4, 3, 3)).min().item() >= 0
    True
    >>> type(norm.freeze((2, 4, 3, 3))).__name__
    'BatchNormAct2d'
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 drop: nn.Module | None = None, act: nn.Module | None = None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))

    def freeze(self, input_shape: tuple[int, ...] | None) -> nn.Module:
        plain = super().freeze(input_shape)
        c = _require_shape(self, input_shape)[1]
        norm = BatchNormAct2d(c, self.eps, self.momentum, self.affine, self.track_running_stats,
                              apply_act=False)
        norm.load_state_dict(plain.state_dict())
        norm.drop, norm.act = self.drop, self.act
        return norm


def conv_problem(conv: nn.Module, role: str) -> str | None:
    """Why ``conv`` cannot become an :class:`~nas_aug.space.ElasticConv2d`, or ``None``."""
    if type(conv) is not nn.Conv2d:
        return f"{role} is a {type(conv).__name__}, not a plain nn.Conv2d"
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    if kh != kw or kh % 2 == 0:
        return f"{role} has kernel {conv.kernel_size} (elastic convs need a square odd kernel)"
    if conv.dilation != (1, 1):
        return f"{role} has dilation {conv.dilation}"
    if sh != sw:
        return f"{role} has stride {conv.stride}"
    if conv.padding != (kh // 2, kh // 2) or conv.padding_mode != "zeros":
        return (f"{role} pads by {conv.padding} ({conv.padding_mode}), not the 'same' zero "
                f"padding {kh // 2} of elastic convs")
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    if conv.groups != 1 and not depthwise:
        return f"{role} is a grouped conv (groups={conv.groups})"
    return None


def is_depthwise(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.groups > 1 and (
        conv.groups == conv.in_channels == conv.out_channels)


def norm_problem(norm: nn.Module, role: str) -> str | None:
    """Why ``norm`` has no elastic variant, or ``None``."""
    if type(norm) not in (nn.BatchNorm2d, BatchNormAct2d):
        return f"{role} is a {type(norm).__name__}, which has no elastic variant"
    if type(norm) is BatchNormAct2d and any(True for _ in norm.act.parameters()):
        return f"{role}'s activation {type(norm.act).__name__} has per-channel parameters"
    return None


def block_problem(block: nn.Module, convs: tuple[str, ...], ungrouped: tuple[str, ...],
                  norms: tuple[str, ...]) -> str | None:
    """Why the inner width of ``block`` cannot be elastic, or ``None``: its ``convs`` must be
    plain convs (``ungrouped`` ones without groups), its ``norms`` batch norms, and its
    anti-aliasing layer (timm's ``aa``) absent."""
    for role in convs:
        problem = conv_problem(getattr(block, role), role)
        if problem:
            return problem
    for role in ungrouped:
        groups = getattr(block, role).groups
        if groups != 1:
            return f"{role} is a grouped conv (groups={groups})"
    for role in norms:
        problem = norm_problem(getattr(block, role), role)
        if problem:
            return problem
    aa = getattr(block, "aa", None)
    if aa is not None and not isinstance(aa, nn.Identity):
        return f"its anti-aliasing layer {type(aa).__name__} is built for the full width"
    return None


def act_problem(act: nn.Module, role: str) -> str | None:
    if any(True for _ in act.parameters()):
        return f"{role} ({type(act).__name__}) has per-channel parameters"
    return None


def elastic_conv(conv: nn.Conv2d, kernel: ValueChoice | None = None,
                 out: MappedChoice | None = None) -> ElasticConv2d:
    """``conv`` as an elastic conv holding the same weight (and bias) objects."""
    new = ElasticConv2d(conv.in_channels, conv.out_channels,
                        kernel if kernel is not None else conv.kernel_size[0],
                        stride=conv.stride[0], depthwise=is_depthwise(conv),
                        bias=conv.bias is not None, out_channels_choice=out)
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new.train(conv.training)


def elastic_norm(norm: nn.BatchNorm2d) -> ElasticBatchNorm2d:
    """``norm`` (``nn.BatchNorm2d`` or timm's ``BatchNormAct2d``) as an elastic batch norm
    holding the same parameters and running statistics."""
    args = (norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    new = (ElasticBatchNormAct2d(*args, drop=norm.drop, act=norm.act)
           if isinstance(norm, BatchNormAct2d) else ElasticBatchNorm2d(*args))
    for name in ("weight", "bias"):
        setattr(new, name, getattr(norm, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(norm, name))
    return new.train(norm.training)


def scaled_channels(base: int, divisor: int, ratio: float) -> int:
    """``base`` channels scaled by ``ratio``, rounded as timm rounds (``make_divisible``)."""
    return base if ratio == 1 else min(base, make_divisible(base * ratio, divisor))


def width_choice(label: str, bases: Sequence[int], spec: ElasticSpec,
                 builds: Callable[[int], bool] = lambda channels: True
                 ) -> tuple[ValueChoice | None, str | None]:
    """The width ratios of ``spec`` (and 1.0) that give distinct channel counts for ``bases``
    and that timm ``builds`` (a channel count it can construct), as a choice (``None`` if
    fewer than two remain), and what was left out for ``builds``, if anything."""
    by_channels: dict[tuple[int, ...], float] = {}
    left_out: dict[float, tuple[int, ...]] = {}
    for ratio in (*spec.width, 1.0):  # ascending: a larger ratio with equal channels wins
        channels = tuple(scaled_channels(b, spec.divisor, ratio) for b in bases)
        if ratio == 1 or all(builds(c) for c in channels):
            by_channels[channels] = ratio
        else:
            left_out[ratio] = channels
    ratios = sorted(set(by_channels.values()))
    why = None if not left_out else "width " + ", ".join(
        f"{ratio:g} ({'/'.join(map(str, channels))} channels)"
        for ratio, channels in left_out.items()) + " left out: timm could not build it"
    return (ValueChoice(label, ratios) if len(ratios) > 1 else None), why


def scaled(choice: ValueChoice, base: int, spec: ElasticSpec) -> MappedChoice:
    """The channel count of a layer whose full width is ``base``, under the ratio ``choice``."""
    return choice.map(partial(scaled_channels, base, spec.divisor))


def kernel_choice(label: str, conv: nn.Module, spec: ElasticSpec
                  ) -> tuple[ValueChoice | None, str | None]:
    """The kernel choice of a depthwise ``conv`` (the spec's kernels up to its own, and its
    own) and why there is none when the spec asks for one."""
    if not spec.kernel:
        return None, None
    problem = conv_problem(conv, "conv_dw")
    if problem is None and not is_depthwise(conv):
        problem = "conv_dw is not depthwise"
    if problem is not None:
        return None, f"kernel: {problem}"
    own = conv.kernel_size[0]
    sizes = sorted({k for k in spec.kernel if k <= own} | {own})
    return (ValueChoice(label, sizes) if len(sizes) > 1 else None), None
