"""timm's private modules, reached from here only.

timm keeps its MobileNetV3 / EfficientNet blocks and the block-string decoder in private
modules (``timm.models._efficientnet_blocks``, ``timm.models._efficientnet_builder``) that it
does not re-export and may move in any release; the rest of nas_aug imports them from this
module, so a timm upgrade that moves them is one file to fix.
"""

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
from timm.models._efficientnet_builder import decode_arch_def

__all__ = ["CondConvResidual", "ConvBnAct", "DepthwiseSeparableConv", "EdgeResidual",
           "InvertedResidual", "MobileAttention", "SqueezeExcite", "UniversalInvertedResidual",
           "decode_arch_def"]
