"""Fused kernels for :mod:`nas_aug.augment.apply`: several ops in one call on a group of samples.

Each kernel takes a batch sorted by op, in the order its tuple lists them, the op's parameter
per sample (as :meth:`Op.parameter` gives it) and how many samples run each op, and computes
what each sample's :class:`~nas_aug.augment.ops.Op` kernel computes, with the same arithmetic:

* :func:`warp` runs the geometric ops (``GEOMETRIC``) as one bilinear ``grid_sample`` with an
  affine map per sample, the ops' own inverse maps;
* :func:`blend` runs the colour ops but ``equalize`` (``BLEND``) each on its slice of one
  output: ``brightness``, ``color`` and ``contrast`` share their ``x * factor`` and their clamp;
  ``posterize`` looks each pixel's 8-bit level up in a table that kornia's ``posterize`` made;
  ``sharpness`` and ``auto_contrast`` (not pointwise) run their own kernels on their slices;
* :func:`remap` runs the whole-pixel ops (``PIXEL``: ``crop``, ``hflip``, ``cutout``) as one
  gather and one mask, with the position each sample drew.

>>> import torch
>>> images = torch.rand(3, 3, 8, 8)
>>> out = blend(images, torch.tensor([0.0, 0.5, 0.5]), [1, 0, 0, 2, 0, 0, 0, 0])  # invert, x 0.5
>>> torch.equal(out[0], 1 - images[0]), torch.equal(out[1:], images[1:] * 0.5)
(True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import accumulate

import torch
from kornia import enhance
from kornia.color import rgb_to_grayscale
from torch import Tensor

from .ops import (
    AFFINE_INVERSES,
    BASE_OPS,
    GEOMETRIC_OPS,
    OPS,
    crop_offsets,
    cutout_boxes,
    erase_boxes,
    shift_pixels,
    warp_affine,
)

__all__ = ["BLEND", "GEOMETRIC", "PIXEL", "blend", "remap", "warp"]

GEOMETRIC = GEOMETRIC_OPS  # the affine ops: one warp
BLEND = ("invert", "solarize", "posterize", "brightness", "color", "contrast", "sharpness",
         "auto_contrast")
PIXEL = BASE_OPS  # the standard pipeline's ops all move or erase whole pixels


def _slices(counts: Sequence[int]) -> list[slice]:
    """Consecutive slices of the given lengths."""
    return [slice(stop - count, stop) for count, stop in zip(counts, accumulate(counts))]


@functools.lru_cache(maxsize=8)
def _posterize_table(dtype: torch.dtype, device: torch.device) -> Tensor:
    """``table[b, q]``: kornia's ``posterize`` at ``b`` bits of any pixel whose 8-bit level,
    ``(x * 255).to(uint8)``, is ``q`` (it depends on nothing else), computed by kornia."""
    levels = ((torch.arange(256, dtype=torch.float64) + 0.5) / 255).to(dtype=dtype, device=device)
    bits = torch.arange(9, device=device)
    return enhance.posterize(levels.expand(9, 1, 1, 256), bits).view(9, 256)


def warp(images: Tensor, value: Tensor, counts: Sequence[int]) -> Tensor:
    """``images`` sorted by op as ``GEOMETRIC`` lists them, ``counts[k]`` of op ``k``, each
    warped by its ``value`` (degrees, shear factor or fraction of the side): the ops' own
    kernels' arithmetic, one ``grid_sample`` for all (see :func:`~.ops.warp_affine`)."""
    height, width = images.shape[-2:]
    value = value.to(device=images.device, dtype=images.dtype)
    inverse = torch.cat([AFFINE_INVERSES[name](value[part], height, width)
                         for name, part, count in zip(GEOMETRIC, _slices(counts), counts)
                         if count])
    return warp_affine(images, inverse)


def blend(images: Tensor, value: Tensor, counts: Sequence[int]) -> Tensor:
    """``images`` sorted by op as ``BLEND`` lists them, ``counts[k]`` of op ``k``, each with its
    op applied at its ``value`` (a factor, the solarize threshold or the posterize bits).

    ``color`` needs 3 channels (it is the identity on 1-channel images: leave them out).
    """
    invert, solarize, posterize, brightness, color, contrast, sharpness, auto_contrast = \
        _slices(counts)
    value = value.to(images.device).view(-1, 1, 1, 1)
    factor = value.to(images.dtype)
    out = torch.empty_like(images)
    out[invert] = 1.0 - images[invert]
    x = images[solarize]
    out[solarize] = torch.where(x < factor[solarize], x, 1.0 - x)
    if counts[2]:
        x, bits = images[posterize], value[posterize].round().long()  # bits, as ops.py rounds
        levels = (x * 255).long().flatten(1)  # the 8-bit level kornia reads, x in [0, 1]
        looked_up = _posterize_table(images.dtype, images.device)[bits.view(-1)].gather(1, levels)
        out[posterize] = torch.where(bits == 8, x, looked_up.view_as(x))
    scaled = slice(brightness.start, contrast.stop)  # PIL's blends: x * factor + ref * (1 - factor)
    out[scaled] = images[scaled] * factor[scaled]
    if counts[4]:
        out[color] += rgb_to_grayscale(images[color]) * (1 - factor[color])
    if counts[5]:
        x = images[contrast]
        mean = rgb_to_grayscale(x).mean((-2, -1), True) if x.shape[-3] == 3 else \
            x.mean((-3, -2, -1), True)
        out[contrast] += mean * (1 - factor[contrast])
    out[scaled].clamp_(0.0, 1.0)
    for part, count, name in ((sharpness, counts[6], "sharpness"),
                              (auto_contrast, counts[7], "auto_contrast")):
        if count:  # not pointwise: the op's own kernel, on its slice
            out[part] = OPS[name].kernel(images[part], factor[part].view(-1))
    return out


def remap(images: Tensor, value: Tensor, counts: Sequence[int], position: Tensor) -> Tensor:
    """``images`` sorted by op as ``PIXEL`` lists them, ``counts[k]`` of op ``k``: the crops and
    flips as one whole-pixel gather, then the cutouts; the ops' own kernels' exact copies."""
    crop, hflip, cutout = _slices(counts)
    batch, _, height, width = images.shape
    shift = torch.zeros(batch, 2, dtype=torch.long, device=images.device)
    shift[crop] = crop_offsets(value[crop], position[crop], height, width)
    flip = torch.zeros(batch, dtype=torch.bool, device=images.device)
    flip[hflip] = True
    out = shift_pixels(images, shift, flip)
    if counts[2]:
        out[cutout] = erase_boxes(out[cutout], cutout_boxes(value[cutout], position[cutout],
                                                            height, width))
    return out
