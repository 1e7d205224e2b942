"""timm's ResNet family (``timm.models.resnet.ResNet``: ResNet, ResNet-D, wide ResNets, ...).

* ``Bottleneck``: the width of the bottleneck (``conv1`` → ``bn1`` → ``conv2`` → ``bn2`` →
  ``conv3``'s input) is one choice for the whole network, labelled ``width`` (after the
  ResNet's module name, if it sits inside another module): a ratio of timm's ``base_width``,
  which is how timm's ResNet sets every Bottleneck's inner width. Each sampled ratio is a
  ``base_width`` timm builds, so every sample exports. A grouped ``conv2`` (ResNeXt) is left
  as it is.
* ``BasicBlock``: no elastic width. timm's ResNet makes every ``BasicBlock`` as wide inside as
  its stage's output, so a narrowed one could not be exported; elasticize says so. (timm's
  BasicBlock takes only ``base_width=64``, so a ResNet mixing both kinds, such as timm's
  ``test_resnet``, exports only at its full width; ``OneShotNAS`` says so before training.)

Their convs are not depthwise, so they get no elastic kernel; the block output (and any
squeeze-excite on it) keeps its width, for the residual sum. Depth is elastic in every stage.
"""

from __future__ import annotations

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


def _base_width(planes: int, width: int, cardinality: int = 1) -> int:
    """The smallest ``base_width`` for which timm's Bottleneck of ``planes`` is ``width``
    wide inside (timm: ``int(planes * (base_width / 64)) * cardinality``)."""
    return next(w for w in range(1, 64 * width + 1)
                if int(planes * (w / 64)) * cardinality >= width)


def _scaled_base(base_width: int, ratio: float) -> int:
    return max(1, round(base_width * ratio))


def _bottleneck_width(planes: int, base_width: int, ratio: float) -> int:
    """The inner width timm gives a Bottleneck of ``planes`` at ``ratio`` of ``base_width``."""
    return int(planes * (_scaled_base(base_width, ratio) / 64))


def _width_label(name: str) -> str:
    """``width`` after the name of the ResNet holding block ``name`` (``layer<i>.<j>``)."""
    parts = name.split(".")
    return ".".join([*parts[:-2], "width"])


def _convert_bottleneck(name: str, block: Bottleneck, spec: ElasticSpec
                        ) -> tuple[list[str], list[str]]:
    if len(spec.width) == 0 or spec.width == (1.0,):
        return [], []
    problem = block_problem(block, ("conv1", "conv2", "conv3"), ("conv1", "conv2", "conv3"),
                            ("bn1", "bn2"))
    if problem:
        return [], [f"width: {problem}"]
    planes = block.conv3.out_channels // Bottleneck.expansion
    base = _base_width(planes, block.conv1.out_channels)
    by_base = {_scaled_base(base, ratio): ratio for ratio in (*spec.width, 1.0)}
    ratios = sorted(ratio for ratio in by_base.values()
                    if _bottleneck_width(planes, base, ratio) >= 1)
    if len(ratios) < 2:
        return [], []
    width = ValueChoice(_width_label(name), ratios)
    channels = width.map(partial(_bottleneck_width, planes, base))
    for conv, norm in (("conv1", "bn1"), ("conv2", "bn2")):
        setattr(block, conv, elastic_conv(getattr(block, conv), out=channels))
        setattr(block, norm, elastic_norm(getattr(block, norm)))
    block.conv3 = elastic_conv(block.conv3)
    return [width.label], []


def _convert_basic(name: str, block: BasicBlock, spec: ElasticSpec
                   ) -> tuple[list[str], list[str]]:
    if len(spec.width) == 0 or spec.width == (1.0,):
        return [], []
    return [], ["width: timm builds a BasicBlock only at its stage's width, so a narrowed one "
                "could not be exported"]


def _keeps_shape(block: nn.Module) -> bool:
    return block.downsample is None  # the residual sum then needs the input's shape


def _definition(model: ResNet) -> dict[str, Any]:
    stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    kinds = [type(stage[0]).__name__ for stage in stages]
    if any(type(b) is not type(stage[0]) or type(b) not in _BLOCKS.values()
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
    base_width = max((_base_width(p, b.conv2.out_channels, cardinality)
                      for p, b in bottlenecks), default=64)
    if base_width != 64 and "BasicBlock" in kinds:
        raise ValueError(f"the Bottlenecks are {base_width}/64 of timm's width, but timm's "
                         "BasicBlock takes base_width 64 only, so a ResNet mixing BasicBlock and "
                         "Bottleneck stages exports only at its full width (elasticize it with "
                         "ElasticSpec(width=()))")
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
            "norm_layer": norm_args(model.bn1, "bn1", with_act=False), "se_layer": None}


def _build(model: type[nn.Module], kwargs: dict[str, Any], definition: Mapping[str, Any]
           ) -> nn.Module:
    """``model(**kwargs)``, with the block names and lists of ``kwargs`` as timm takes them."""
    kwargs["block"] = [_BLOCKS[name] for name in kwargs["block"]]
    kwargs["layers"], kwargs["channels"] = tuple(kwargs["layers"]), tuple(kwargs["channels"])
    return model(**kwargs)


FAMILY = register(Family(
    name="ResNet",
    blocks={
        BasicBlock: BlockRule(_convert_basic, _keeps_shape),
        Bottleneck: BlockRule(_convert_bottleneck, _keeps_shape),
    },
    models=(ResNet,),
    definition=_definition,
    build=_build,
))
