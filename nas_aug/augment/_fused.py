"""Fused kernels for :mod:`nas_aug.augment.apply`: several ops in one call on a group of samples.

Each kernel takes a batch sorted by op, in the order its tuple lists them, the op's parameter
per sample (as :meth:`Op.parameter` gives it) and how many samples run each op, and computes
what each sample's :class:`~nas_aug.augment.ops.Op` kernel computes, with the same arithmetic:

* :func:`warp` runs the geometric ops (``GEOMETRIC``) as one bilinear affine warp with a 2 x 3
  matrix per sample, built as kornia's ``rotate`` / ``shear`` / ``translate`` build theirs;
* :func:`blend` runs the pointwise colour ops (``BLEND``) each on its slice of one output:
  ``brightness``, ``color`` and ``contrast`` share their ``x * factor`` and their clamp;
  ``posterize`` looks each pixel's 8-bit level up in a table that kornia's ``posterize`` made;
* :func:`remap` runs the whole-pixel ops (``PIXEL``: ``crop``, ``hflip``, ``cutout``) as one
  gather and one mask, with the position each sample drew.

>>> import torch
>>> images = torch.rand(3, 3, 8, 8)
>>> out = blend(images, torch.tensor([0.0, 0.5, 0.5]), [1, 0, 0, 2, 0, 0])  # invert, brightness x 2
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
from kornia.geometry import transform
from torch import Tensor

from .ops import BASE_OPS, GEOMETRIC_OPS, crop_offsets, cutout_boxes, erase_boxes, shift_pixels

__all__ = ["BLEND", "GEOMETRIC", "PIXEL", "blend", "remap", "warp"]

GEOMETRIC = GEOMETRIC_OPS  # the affine ops: one warp
BLEND = ("invert", "solarize", "posterize", "brightness", "color", "contrast")
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
    warped by its ``value`` (degrees, shear factor or fraction of the side).

    Rotations turn about the image centre, shears about pixel (0, 0); bilinear sampling, zeros
    outside, ``align_corners=True``: the ops' own kernels, in one warp.
    """
    rotate, shear_x, shear_y, translate_x, translate_y = _slices(counts)
    batch, _, height, width = images.shape
    value = value.to(device=images.device, dtype=images.dtype)
    matrix = torch.eye(2, 3, device=images.device, dtype=images.dtype).repeat(batch, 1, 1)
    if counts[0]:
        centre = matrix.new_empty(counts[0], 2)  # filled on the device, as kornia's rotate
        centre[:, 0], centre[:, 1] = (width - 1) / 2, (height - 1) / 2
        matrix[rotate] = transform.get_rotation_matrix2d(centre, value[rotate],
                                                         torch.ones_like(centre))
    matrix[shear_x, 0, 1] = value[shear_x]
    matrix[shear_y, 1, 0] = value[shear_y]
    matrix[translate_x, 0, 2] = value[translate_x] * width
    matrix[translate_y, 1, 2] = value[translate_y] * height
    return transform.affine(images, matrix, align_corners=True)


def blend(images: Tensor, value: Tensor, counts: Sequence[int]) -> Tensor:
    """``images`` sorted by op as ``BLEND`` lists them, ``counts[k]`` of op ``k``, each with its
    op applied at its ``value`` (a factor, the solarize threshold or the posterize bits).

    ``color`` needs 3 channels (it is the identity on 1-channel images: leave them out).
    """
    invert, solarize, posterize, brightness, color, contrast = _slices(counts)
    value = value.to(images.device).view(-1, 1, 1, 1)
    factor = value.to(images.dtype)
    out = torch.empty_like(images)
    out[invert] = 1.0 - images[invert]
    x = images[solarize]
    out[solarize] = torch.where(x < factor[solarize], x, 1.0 - x)
    if counts[2]:
        x, bits = images[posterize], value[posterize].round().long()  # bits, as ops.py rounds
        table = _posterize_table(images.dtype, images.device)
        out[posterize] = torch.where(bits == 8, x, table[bits, (x * 255).to(torch.uint8).long()])
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
