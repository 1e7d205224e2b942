"""``mobilenet_tiny``: an inverted-residual space of the MobileNetV3 / Once-for-All family,
sized for 8x8 to 32x32 inputs. Per block: elastic expand ratio and depthwise kernel size;
per stage: elastic depth; squeeze-excite in the last two stages; elastic head width."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import ConvNormAct, get_act_layer, make_divisible
from torch import nn

from ..space import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepth,
    ElasticLinear,
    MappedChoice,
    ValueChoice,
)
from ._registry import SearchSpace, register_space

# (output channels, stride of the first block, blocks, squeeze-excite, activation)
STAGES = (
    (16, 1, 2, False, "relu"),
    (24, 2, 3, False, "relu"),
    (40, 2, 3, True, "hard_swish"),
    (64, 2, 3, True, "hard_swish"),
)


def _hidden_channels(in_chs: int, expand: float) -> int:
    return make_divisible(in_chs * expand, 8)


def _se_channels(in_chs: int, expand: float) -> int:
    return make_divisible(_hidden_channels(in_chs, expand) * 0.25, 8)


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excite whose width and reduced width follow choices (mapped from the block's
    expand ratio)."""

    def __init__(self, channels: MappedChoice, reduced: MappedChoice):
        super().__init__()
        max_chs, max_reduced = max(channels.candidates), max(reduced.candidates)
        self.conv_reduce = ElasticConv2d(max_chs, max_reduced, 1, bias=True,
                                         out_channels_choice=reduced)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = ElasticConv2d(max_reduced, max_chs, 1, bias=True,
                                         out_channels_choice=channels)
        self.gate = get_act_layer("hard_sigmoid")()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.act(self.conv_reduce(x.mean((2, 3), keepdim=True)))
        return x * self.gate(self.conv_expand(scale))


class ElasticInvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, kxk depthwise, optional SE, 1x1 project."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: ValueChoice,
                 kernel: ValueChoice, se: bool, act_layer):
        super().__init__()
        hidden = expand.map(partial(_hidden_channels, in_chs))
        max_hidden = max(hidden.candidates)
        self.conv_pw = ElasticConv2d(in_chs, max_hidden, 1, out_channels_choice=hidden)
        self.bn1 = ElasticBatchNorm2d(max_hidden)
        self.act1 = act_layer(inplace=True)
        self.conv_dw = ElasticConv2d(max_hidden, max_hidden, kernel, stride=stride,
                                     depthwise=True)
        self.bn2 = ElasticBatchNorm2d(max_hidden)
        self.act2 = act_layer(inplace=True)
        self.se = (ElasticSqueezeExcite(hidden, expand.map(partial(_se_channels, in_chs)))
                   if se else nn.Identity())
        self.conv_pwl = ElasticConv2d(max_hidden, out_chs, 1)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(self.se(x)))
        return x + shortcut if self.has_skip else x


def _check(name: str, values, valid, what: str) -> tuple:
    values = tuple(values)
    if not values or any(not valid(v) for v in values):
        raise ValueError(f"mobilenet_tiny: {name}={values!r} is invalid; expected {what}")
    return values


@register_space
class MobileNetTiny(SearchSpace):
    """The ``mobilenet_tiny`` supernet: inverted-residual blocks for 8x8 to 32x32 images
    (4 stages, up to 11 blocks; see the module docstring). ``create_space("mobilenet_tiny",
    **kw)`` and ``MobileNetTiny(**kw)`` (or a config's ``class_path:
    nas_aug.search_spaces.MobileNetTiny``) build the same supernet.

    Args:
        num_classes: outputs of the classifier.
        in_chans: input channels.
        img_size: input height and width, 8 to 32 (``default_input_shape`` is
            ``(in_chans, img_size, img_size)``).
        expand_ratios: each block's candidate expand ratios (positive numbers).
        kernel_sizes: each block's candidate depthwise kernel sizes (odd integers).
        min_depth: the fewest blocks a stage may keep (capped at the stage's blocks).
        head_widths: the candidate widths of the head's 1x1 convolution (positive integers).

    >>> from nas_aug.search_spaces import create_space
    >>> net = MobileNetTiny(num_classes=10, in_chans=1, img_size=8)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> net.space_name, net.space_kwargs
    ('mobilenet_tiny', {'num_classes': 10, 'in_chans': 1, 'img_size': 8})
    >>> same = create_space("mobilenet_tiny", num_classes=10, in_chans=1, img_size=8)
    >>> same.space_kwargs == net.space_kwargs and str(same) == str(net)
    True
    """

    name = "mobilenet_tiny"

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                 expand_ratios: Sequence[int | float] = (3, 4, 6),
                 kernel_sizes: Sequence[int] = (3, 5, 7), min_depth: int = 1,
                 head_widths: Sequence[int] = (96, 128)):
        super().__init__()
        if not 8 <= img_size <= 32:
            raise ValueError(f"mobilenet_tiny: img_size={img_size} is outside 8..32")
        expand_ratios = _check("expand_ratios", expand_ratios, lambda v: v > 0,
                               "positive numbers")
        kernel_sizes = _check("kernel_sizes", kernel_sizes,
                              lambda v: isinstance(v, int) and v % 2 == 1, "odd integers")
        head_widths = _check("head_widths", head_widths,
                             lambda v: isinstance(v, int) and v > 0, "positive integers")
        stem_chs = 16
        self.default_input_shape = (in_chans, img_size, img_size)
        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=1, act_layer="hard_swish")
        stages, in_chs = [], stem_chs
        for s, (out_chs, stride, blocks, se, act) in enumerate(STAGES):
            layers = []
            for b in range(blocks):
                layers.append(ElasticInvertedResidual(
                    in_chs, out_chs, stride if b == 0 else 1,
                    ValueChoice(f"stage{s}.block{b}.expand", expand_ratios),
                    ValueChoice(f"stage{s}.block{b}.kernel", kernel_sizes),
                    se, get_act_layer(act)))
                in_chs = out_chs
            stages.append(ElasticDepth(f"stage{s}.depth", layers, min_depth=min(min_depth, blocks)))
        self.stages = nn.Sequential(*stages)
        width = ValueChoice("head.width", head_widths)
        max_width = max(width.candidates)
        self.head = nn.Sequential(
            ElasticConv2d(in_chs, max_width, 1, out_channels_choice=width),
            ElasticBatchNorm2d(max_width),
            get_act_layer("hard_swish")(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            ElasticLinear(max_width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
