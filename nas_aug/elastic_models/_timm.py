"""timm's private modules, reached from here only.

timm keeps its MobileNetV3 / EfficientNet blocks in a private module
(``timm.models._efficientnet_blocks``) that it does not re-export and may move in any release;
the rest of nas_aug imports them from this module, so a timm upgrade that moves them is one
file to fix. What builds a model (``decode_arch_def``, the ``SqueezeExcite`` a model is given)
comes from the public ``timm.models.mobilenetv3``, as in the README's plain-timm lines.
"""

from timm.models._efficientnet_blocks import (
    CondConvResidual,
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
    MobileAttention,
    UniversalInvertedResidual,
)
from timm.models.mobilenetv3 import SqueezeExcite, decode_arch_def

__all__ = ["CondConvResidual", "ConvBnAct", "DepthwiseSeparableConv", "EdgeResidual",
           "InvertedResidual", "MobileAttention", "SqueezeExcite", "UniversalInvertedResidual",
           "decode_arch_def"]
