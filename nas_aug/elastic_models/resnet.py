"""timm's ResNet family (``timm.models.resnet.ResNet``: ResNet, ResNet-D, SE-ResNet, ...).

* ``BasicBlock``: width of ``conv1``'s output (→ ``bn1`` → ``conv2``'s input);
* ``Bottleneck``: width of the bottleneck (``conv1`` → ``bn1`` → ``conv2`` → ``bn2`` →
  ``conv3``'s input); a grouped ``conv2`` (ResNeXt) is left as it is.

Their convs are not depthwise, so they get no elastic kernel; the block output (and any
squeeze-excite on it) keeps its width, for the residual sum.

The timm export writes depth samples. timm's ResNet derives every block's inner width from its
stage and network-wide arguments (``channels``, ``base_width``), so a sample that narrows a
block is refused (unless it narrows every Bottleneck alike, which ``base_width`` expresses).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from .family import BlockRule, Family, register
from .layers import block_problem, elastic_conv, elastic_norm, scaled, width_choice
from .spec import ElasticSpec
from .timm_export import act_name, norm_args

_BLOCKS: dict[str, type[nn.Module]] = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}


def _convert(widened: tuple[str, ...], reader: str):
    """Width for a block whose convs ``widened`` change their output width together (with the
    norm after each, ``bn1``, ``bn2``...) and ``reader`` reads it."""
    norms = tuple(f"bn{i + 1}" for i in range(len(widened)))

    def convert(name: str, block: nn.Module, spec: ElasticSpec) -> tuple[list[str], list[str]]:
        if len(spec.width) == 0 or spec.width == (1.0,):
            return [], []
        problem = block_problem(block, (*widened, reader), (*widened, reader), norms)
        if problem:
            return [], [f"width: {problem}"]
        bases = [getattr(block, role).out_channels for role in widened]
        width = width_choice(f"{name}.width", bases, spec)
        if width is None:
            return [], []
        for role, base, norm in zip(widened, bases, norms):
            setattr(block, role, elastic_conv(getattr(block, role),
                                              out=scaled(width, base, spec)))
            setattr(block, norm, elastic_norm(getattr(block, norm)))
        setattr(block, reader, elastic_conv(getattr(block, reader)))
        return [width.label], []

    return convert


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
        BasicBlock: BlockRule(_convert(("conv1",), "conv2"), _keeps_shape),
        Bottleneck: BlockRule(_convert(("conv1", "conv2"), "conv3"), _keeps_shape),
    },
    models=(ResNet,),
    definition=_definition,
    build=_build,
))
