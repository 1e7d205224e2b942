"""timm's ResNet family (``timm.models.resnet.ResNet``: ResNet, ResNet-D, wide ResNets, ...).

timm's ResNet derives every block's inner width from its stage (``channels``) and one
network-wide ``base_width``, so only what ``base_width`` expresses is made elastic, and every
sample exports back to timm:

* depth (the stages' blocks after the first);
* width, for a ResNet of ``Bottleneck`` blocks only: one choice labelled ``"<model>.width"``
  (``"width"`` for the ResNet itself), a ratio of ``base_width`` that narrows every bottleneck
  alike (``conv1`` → ``bn1`` → ``conv2`` → ``bn2`` → ``conv3``'s input) to
  ``floor(planes * base_width / 64)`` channels, as timm does. A ``BasicBlock`` is as wide as its
  stage (timm refuses another ``base_width`` for it), so a ResNet holding one gets no width,
  and the report says so. A grouped ``conv2`` (ResNeXt) gets none either.

Their convs are not depthwise, so they get no elastic kernel; the block output (and any
squeeze-excite on it) keeps its width, for the residual sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..space import ValueChoice
from .family import BlockRule, Family, register
from .layers import block_problem, elastic_conv, elastic_norm
from .spec import ElasticSpec
from .timm_export import act_name, norm_args

_BLOCKS: dict[str, type[nn.Module]] = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
BUILD = ("timm.models.ResNet(block=[getattr(timm.models.resnet, b) for b in block], "
         "act_layer=timm.layers.get_act_layer(act_layer), "
         "norm_layer=functools.partial(torch.nn.BatchNorm2d, **norm_layer), **kwargs)")


def _stages(model: ResNet) -> list[nn.Module]:
    return [getattr(model, f"layer{i}") for i in range(1, 5)]


def _bottleneck_width(planes: int, base_width: float) -> int:
    """timm's inner width of a ``Bottleneck`` of ``planes`` (cardinality 1)."""
    return int(math.floor(planes * (base_width / 64)))


def _base_width(bottlenecks: list[nn.Module]) -> int | None:
    """The smallest integer ``base_width`` giving every bottleneck its inner width."""
    top = 64 * max(b.conv2.out_channels for b in bottlenecks)
    return next((w for w in range(1, top + 1) if all(
        _bottleneck_width(b.conv3.out_channels // b.expansion, w) * b.conv2.groups
        == b.conv2.out_channels for b in bottlenecks)), None)


def _blocks(model: ResNet) -> list[tuple[str, nn.Module]]:
    return [(f"layer{s + 1}.{i}", block) for s, stage in enumerate(_stages(model))
            for i, block in enumerate(stage)]


def _width_problem(model: ResNet) -> str | None:
    for name, block in _blocks(model):
        if type(block) is not Bottleneck:
            return (f"{name} is a {type(block).__name__}: timm's ResNet builds a BasicBlock as "
                    "wide as its stage, so only depth is elastic")
        problem = block_problem(block, ("conv1", "conv2", "conv3"), ("conv1", "conv2"),
                                ("bn1", "bn2"))
        if problem:
            return f"{name}: {problem}"
        if block.conv1.out_channels != block.conv2.out_channels:
            return f"{name}: conv1 is narrower than conv2 (reduce_first)"
    return None


def _convert_model(name: str, model: ResNet, spec: ElasticSpec) -> tuple[list[str], list[str]]:
    """One width ratio of ``base_width`` for every ``Bottleneck`` of ``model``."""
    if len(spec.width) == 0 or spec.width == (1.0,):
        return [], []
    problem = _width_problem(model)
    bottlenecks = [b for stage in _stages(model) for b in stage]
    base = None if problem else _base_width(bottlenecks)
    if problem or base is None:
        return [], [f"width: {problem or 'its bottleneck widths have no common base_width'}"]
    planes = [b.conv3.out_channels // b.expansion for b in bottlenecks]
    by_widths: dict[tuple[int, ...], float] = {}
    for ratio in (*spec.width, 1.0):  # ascending: a larger ratio with equal widths wins
        widths = tuple(_bottleneck_width(p, round(base * ratio)) for p in planes)
        if min(widths) > 0:
            by_widths[widths] = ratio
    ratios = sorted(set(by_widths.values()))
    if len(ratios) < 2:
        return [], []
    width = ValueChoice(f"{name}.width" if name else "width", ratios)
    for block, p in zip(bottlenecks, planes):
        out = width.map(partial(_ratio_width, p, base))
        block.conv1, block.conv2 = (elastic_conv(block.conv1, out=out),
                                    elastic_conv(block.conv2, out=out))
        block.bn1, block.bn2 = elastic_norm(block.bn1), elastic_norm(block.bn2)
        block.conv3 = elastic_conv(block.conv3)
    return [width.label], []


def _ratio_width(planes: int, base: int, ratio: float) -> int:
    return _bottleneck_width(planes, round(base * ratio))


def _no_choice(name: str, block: nn.Module, spec: ElasticSpec) -> tuple[list[str], list[str]]:
    return [], []  # a block's width is the model's (convert_model); its depth is its stage's


def _keeps_shape(block: nn.Module) -> bool:
    return block.downsample is None  # the residual sum then needs the input's shape


def _definition(model: ResNet) -> dict[str, Any]:
    stages = _stages(model)
    kinds = [type(stage[0]).__name__ for stage in stages]
    if any(type(b) is not type(stage[0]) or type(b) not in _BLOCKS.values()
           for stage in stages for b in stage):
        raise ValueError("the timm export writes ResNets whose stages are all BasicBlock or "
                         "all Bottleneck blocks")
    for name, block in _blocks(model):
        if getattr(block, "se", None) is not None or not isinstance(block.aa, nn.Identity):
            raise ValueError(f"{name} has an attention or anti-aliasing layer, which the timm "
                             "export does not write")
        if type(block) is BasicBlock and block.conv1.out_channels != block.conv2.out_channels:
            raise ValueError(f"{name} is {block.conv1.out_channels} channels wide inside, where "
                             f"timm's ResNet makes a BasicBlock as wide as its stage "
                             f"({block.conv2.out_channels})")
    planes = [stage[0].conv2.out_channels if kind == "BasicBlock"
              else stage[0].conv3.out_channels // Bottleneck.expansion
              for stage, kind in zip(stages, kinds)]
    bottlenecks = [b for stage in stages for b in stage if type(b) is Bottleneck]
    base_width = _base_width(bottlenecks) if bottlenecks else 64
    if base_width is None:
        widths = [b.conv2.out_channels for b in bottlenecks]
        raise ValueError(f"the bottlenecks' inner widths {widths} are not timm's: it makes every "
                         "Bottleneck floor(planes * base_width / 64) * cardinality wide, for "
                         "one base_width")
    down = next((s[0].downsample for s in stages if s[0].downsample is not None), None)
    deep = isinstance(model.conv1, nn.Sequential)
    stem_type = ("deep_tiered" if model.conv1[0].out_channels != model.conv1[3].out_channels
                 else "deep") if deep else ""
    kwargs: dict[str, Any] = {
        "layers": [len(stage) for stage in stages], "channels": planes,
        "num_classes": model.num_classes, "in_chans": model.in_chans,
        "stem_width": model.conv1[3].out_channels if deep else 64, "stem_type": stem_type,
        "replace_stem_pool": isinstance(model.maxpool, nn.Sequential),
        "cardinality": bottlenecks[0].conv2.groups if bottlenecks else 1,
        "base_width": base_width, "avg_down": down is not None and len(down) == 3,
        "down_kernel_size": 1 if down is None else down[-2].kernel_size[0],
        "drop_rate": model.drop_rate, "global_pool": model.global_pool.pool_type}
    return {"model": "ResNet", "build": BUILD, "kwargs": kwargs, "block": kinds,
            "act_layer": act_name(model.act1, "act1"),
            "norm_layer": norm_args(model.bn1, "bn1", with_act=False)}


def _build(model: type[nn.Module], kwargs: dict[str, Any], definition: Mapping[str, Any]
           ) -> nn.Module:
    """``ResNet(block=..., **kwargs)``, the definition's block names as timm's classes."""
    return model(block=[_BLOCKS[name] for name in definition["block"]], **kwargs)


FAMILY = register(Family(
    name="ResNet",
    blocks={BasicBlock: BlockRule(_no_choice, _keeps_shape),
            Bottleneck: BlockRule(_no_choice, _keeps_shape)},
    models=(ResNet,),
    definition=_definition,
    build=_build,
    convert_model=_convert_model,
))
