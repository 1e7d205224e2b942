"""Elastic layers: one shared weight, sliced to the active width and kernel size.

Input channels are read from the input tensor, output channels and kernel size from the
active sample. A smaller kernel is the centre of the largest one (as in Once-for-All), and a
narrower layer uses the first channels of the widest one, so every path shares storage.

Mixed (see :mod:`nas_aug.space.mixing`), a layer computes its largest width with a non-zero
weight and a layer that reads a mixed width masks its input channels by it (FBNetV2's mask,
applied after any batch norm and activation in between); a mixed kernel is the weighted sum of
the centre crops.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .choice import ComputedChoice, MappedChoice, ValueChoice, largest_value, resolve
from .mixing import Mix, UnmixableError
from .modules import ChoiceModule, _require_shape

# (label, input width under each of its candidates) of a layer whose input width is mixed
InputWidth = tuple[str, tuple[int, ...]]


def _sources(*values: Any) -> list[ValueChoice]:
    out = []
    for value in values:
        if isinstance(value, MappedChoice):
            out.append(value.source)
        elif isinstance(value, ComputedChoice):
            out.extend(value.sources)
        elif isinstance(value, ValueChoice):
            out.append(value)
    return out


def _check_in(module: nn.Module, got: int, most: int) -> None:
    if got > most:
        raise ValueError(f"{type(module).__name__} was built for at most {most} input "
                         f"channels/features but received {got}")


def _centre(weight: torch.Tensor, size: int) -> torch.Tensor:
    start = (weight.shape[-1] - size) // 2
    return weight[..., start:start + size, start:start + size]


def _mix_of(choice: Any, mixing: dict[str, Mix]) -> Mix | None:
    if isinstance(choice, ComputedChoice):
        mixed = [label for label in choice.labels if label in mixing]
        if mixed:
            raise UnmixableError(mixed[0], f"a width is computed from several labels "
                                           f"{list(choice.labels)}")
        return None
    return mixing.get(choice.label) if isinstance(choice, (ValueChoice, MappedChoice)) else None


def _mixed_width(choice: Any, mixing: dict[str, Mix]) -> int | None:
    """The largest width of ``choice`` with a non-zero weight, ``None`` if it is not mixed."""
    mix = _mix_of(choice, mixing)
    return None if mix is None else mix.largest(choice.candidates)


def _mask_inputs(module: ElasticConv2d | ElasticLinear, weight: torch.Tensor,
                 size: int) -> torch.Tensor:
    """``weight`` with input column ``c`` scaled by the mixed weight of the widths above ``c``
    (the same as masking the input, on the smaller tensor)."""
    mix = None if module.input_width is None else module.mixing.get(module.input_width[0])
    if mix is None:
        return weight
    mask = mix.mask(module.input_width[1], size, weight)
    return weight * mask.view(1, size, *(1,) * (weight.dim() - 2))


class ElasticConv2d(nn.Conv2d, ChoiceModule):
    """A conv whose output channels and (odd) kernel size are choices; "same" padding.

    ``depthwise=True`` makes groups equal to the input channels (and output = input).

    >>> import torch
    >>> k = ValueChoice("k", [3, 5])
    >>> conv = ElasticConv2d(8, 16, k, out_channels_choice=ValueChoice("w", [8, 16]))
    >>> conv.activate({"k": 3, "w": 8})
    >>> conv(torch.zeros(2, 4, 6, 6)).shape
    torch.Size([2, 8, 6, 6])
    """

    mixable = True
    input_width: InputWidth | None = None  # set by nas_aug.supernet.set_mixing's probe

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | ValueChoice,
                 stride: int = 1, depthwise: bool = False, bias: bool = False,
                 out_channels_choice: ValueChoice | MappedChoice | ComputedChoice | None = None):
        max_kernel = largest_value(kernel_size)
        for k in getattr(kernel_size, "candidates", (kernel_size,)):
            if k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd for centre slicing, got {k}")
        if depthwise and out_channels != in_channels:
            raise ValueError(f"a depthwise conv has out_channels == in_channels, got "
                             f"{out_channels} != {in_channels}")
        if out_channels_choice is not None and largest_value(out_channels_choice) > out_channels:
            raise ValueError(f"out_channels_choice {out_channels_choice!r} exceeds "
                             f"out_channels={out_channels}")
        super().__init__(in_channels, out_channels, max_kernel, stride=stride,
                         padding=max_kernel // 2, groups=in_channels if depthwise else 1,
                         bias=bias)
        self.depthwise = depthwise
        self.kernel_choice = kernel_size
        self.out_choice = out_channels_choice
        self.active_kernel = max_kernel
        self.active_out = out_channels

    def choices(self) -> list[ValueChoice]:
        return _sources(self.kernel_choice, self.out_choice)

    def activate(self, sample: Mapping[str, Any]) -> None:
        self.active_kernel = resolve(self.kernel_choice, sample)
        if self.out_choice is not None:
            self.active_out = resolve(self.out_choice, sample)

    def _active(self, in_channels: int, out: int | None = None, kernel: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
        _check_in(self, in_channels, self.in_channels)
        out = in_channels if self.depthwise else self.active_out if out is None else out
        kernel = self.active_kernel if kernel is None else kernel
        weight = _centre(self.weight[:out, : 1 if self.depthwise else in_channels], kernel)
        bias = None if self.bias is None else self.bias[:out]
        return weight, bias, out, in_channels if self.depthwise else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mixing is not None:
            return self._mixed_forward(x)
        weight, bias, _, groups = self._active(x.shape[1])
        return F.conv2d(x, weight, bias, self.stride, self.active_kernel // 2, 1, groups)

    def _mixed_forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel_mix = _mix_of(self.kernel_choice, self.mixing)
        if kernel_mix is None:
            kernel = self.active_kernel
        else:  # the largest kernel with a non-zero weight; smaller ones are its zero-padded centre
            sizes = self.kernel_choice.candidates
            kernel = kernel_mix.largest(sizes)
        weight, bias, _, groups = self._active(
            x.shape[1], _mixed_width(self.out_choice, self.mixing), kernel)
        weight = _mask_inputs(self, weight, x.shape[1])
        if kernel_mix is not None:
            weight = kernel_mix.combine(lambda i: F.pad(_centre(weight, sizes[i]),
                                                        [(kernel - sizes[i]) // 2] * 4))
        return F.conv2d(x, weight, bias, self.stride, kernel // 2, 1, groups)

    def freeze(self, input_shape: tuple[int, ...] | None) -> nn.Module:
        in_channels = _require_shape(self, input_shape)[1]
        weight, bias, out, groups = self._active(in_channels)
        conv = nn.Conv2d(in_channels, out, self.active_kernel, stride=self.stride,
                         padding=self.active_kernel // 2, groups=groups, bias=bias is not None)
        conv.weight = nn.Parameter(weight.detach().clone(), self.weight.requires_grad)
        if bias is not None:
            conv.bias = nn.Parameter(bias.detach().clone(), self.bias.requires_grad)
        return conv


class ElasticLinear(nn.Linear, ChoiceModule):
    """A linear layer whose input features follow the input and output features a choice.

    >>> import torch
    >>> fc = ElasticLinear(32, 10)
    >>> fc(torch.zeros(3, 24)).shape
    torch.Size([3, 10])
    """

    mixable = True
    input_width: InputWidth | None = None  # set by nas_aug.supernet.set_mixing's probe

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 out_features_choice: ValueChoice | MappedChoice | ComputedChoice | None = None):
        if out_features_choice is not None and largest_value(out_features_choice) > out_features:
            raise ValueError(f"out_features_choice {out_features_choice!r} exceeds "
                             f"out_features={out_features}")
        super().__init__(in_features, out_features, bias=bias)
        self.out_choice = out_features_choice
        self.active_out = out_features

    def choices(self) -> list[ValueChoice]:
        return _sources(self.out_choice)

    def activate(self, sample: Mapping[str, Any]) -> None:
        if self.out_choice is not None:
            self.active_out = resolve(self.out_choice, sample)

    def _active(self, in_features: int, out: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_in(self, in_features, self.in_features)
        out = self.active_out if out is None else out
        weight = self.weight[:out, :in_features]
        return weight, None if self.bias is None else self.bias[:out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mixing is not None:
            weight, bias = self._active(x.shape[-1], _mixed_width(self.out_choice, self.mixing))
            return F.linear(x, _mask_inputs(self, weight, x.shape[-1]), bias)
        return F.linear(x, *self._active(x.shape[-1]))

    def freeze(self, input_shape: tuple[int, ...] | None) -> nn.Module:
        in_features = _require_shape(self, input_shape)[-1]
        weight, bias = self._active(in_features)
        fc = nn.Linear(in_features, self.active_out, bias=bias is not None)
        fc.weight = nn.Parameter(weight.detach().clone(), self.weight.requires_grad)
        if bias is not None:
            fc.bias = nn.Parameter(bias.detach().clone(), self.bias.requires_grad)
        return fc


class ElasticBatchNorm2d(nn.BatchNorm2d, ChoiceModule):
    """Batch norm over the first ``C`` channels of its parameters and running statistics.

    Training updates only the slice in use, in place, so widths share statistics. Mixed, the
    input has the largest mixed width and every channel's statistics are updated (the width
    mask acts after this layer, where the next one reads its input).

    >>> import torch
    >>> bn = ElasticBatchNorm2d(16)
    >>> bn(torch.randn(4, 8, 3, 3)).shape
    torch.Size([4, 8, 3, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        _check_in(self, c, self.num_features)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            None if self.running_mean is None else self.running_mean[:c],
            None if self.running_var is None else self.running_var[:c],
            None if self.weight is None else self.weight[:c],
            None if self.bias is None else self.bias[:c],
            use_batch_stats, factor, self.eps,
        )

    def freeze(self, input_shape: tuple[int, ...] | None) -> nn.Module:
        c = _require_shape(self, input_shape)[1]
        _check_in(self, c, self.num_features)
        bn = nn.BatchNorm2d(c, self.eps, self.momentum, self.affine, self.track_running_stats)
        with torch.no_grad():
            if self.affine:
                bn.weight.copy_(self.weight[:c])
                bn.bias.copy_(self.bias[:c])
            if self.track_running_stats:
                bn.running_mean.copy_(self.running_mean[:c])
                bn.running_var.copy_(self.running_var[:c])
                bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn
