"""timm's ResNet family (``timm.models.resnet.ResNet``: ResNet, ResNet-D, SE-ResNet, ...).

* ``BasicBlock``: width of ``conv1``'s output (→ ``bn1`` → ``conv2``'s input);
* ``Bottleneck``: width of the bottleneck (``conv1`` → ``bn1`` → ``conv2`` → ``bn2`` →
  ``conv3``'s input); a grouped ``conv2`` (ResNeXt) is left as it is.

Their convs are not depthwise, so they get no elastic kernel; the block output (and any
squeeze-excite on it) keeps its width, for the residual sum.
"""

from __future__ import annotations

from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from .layers import block_problem, elastic_conv, elastic_norm, scaled, width_choice
from .spec import BlockRule, ElasticSpec, Family


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


FAMILY = Family(
    name="ResNet",
    blocks={
        BasicBlock: BlockRule(_convert(("conv1",), "conv2"), _keeps_shape),
        Bottleneck: BlockRule(_convert(("conv1", "conv2"), "conv3"), _keeps_shape),
    },
)
