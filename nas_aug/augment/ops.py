"""The op table: every augmentation op a policy may name, and how its magnitude maps to a parameter.

A magnitude ``m`` lies in ``[0, 1]``; ``1.0`` is the strongest setting. Each op turns ``m`` into
its parameter linearly, ``start + (end - start) * m``; a *signed* op flips the offset from
``start`` with a sign drawn per sample (``start + sign * (end - start) * m``). The ranges follow
torchvision's ``_augmentation_space`` for AutoAugment / RandAugment (its 10 or 31 magnitude bins
become ``bin / (bins - 1)`` here). The ops work per sample on a batch of float images in
``[0, 1]`` and are built on ``kornia.enhance``; the geometric ops compute what
``kornia.geometry.transform`` does, with a cheaper sampling grid (:func:`warp_affine`).

=============  ==========================================  =========  ========  ========
name           parameter                                   m = 0      m = 1     channels
=============  ==========================================  =========  ========  ========
identity       (none)                                      --         --        any
auto_contrast  (none) per-channel min-max stretch          --         --        any
equalize       (none) per-channel histogram equalisation   --         --        any
invert         (none) ``1 - x``                            --         --        any
rotate         angle in degrees, signed                    0          +-30      any
shear_x        shear factor about pixel (0, 0), signed     0          +-0.3     any
shear_y        shear factor about pixel (0, 0), signed     0          +-0.3     any
translate_x    shift as a fraction of the width, signed    0          +-0.453   any
translate_y    shift as a fraction of the height, signed   0          +-0.453   any
brightness     blend factor with black, signed             1          1 +- 0.9  any
color          blend factor with grey (saturation), signed 1          1 +- 0.9  1 or 3
contrast       blend factor with the mean grey, signed     1          1 +- 0.9  any
sharpness      blend factor with a blurred copy, signed    1          1 +- 0.9  any
posterize      bits kept, rounded to an integer            8          4         any
solarize       threshold, pixels at or above it inverted   256/255    0         any
crop           padding as a fraction of each side          0          0.25      any
hflip          (none) mirror left to right                 --         --        any
cutout         erased box as a fraction of each side       0          0.5       any
=============  ==========================================  =========  ========  ========

``color`` needs RGB: on 1-channel images it is the identity (a grey image has no saturation to
change; PIL does the same), and on any other channel count it raises ``ValueError``. The
translate range is torchvision's ``150 / 331`` of the image side. ``equalize`` follows PIL, so a
plane of at most 255 pixels (an 8 x 8 digit, say) comes back unchanged. Geometric ops fill
uncovered pixels with 0 and sample bilinearly. ``solarize`` at ``m = 0`` inverts nothing (the
threshold sits above every 8-bit level) and at ``m = 1`` inverts everything.

``crop``, ``hflip`` and ``cutout`` are the standard pipeline's ops (random crop with padding,
horizontal flip, Cutout), not RandAugment's. ``crop`` pads each side with ``round(v * side)``
black pixels and crops back to the image's size at a random offset: a whole-pixel shift of up
to that padding in each direction, as torchvision's ``RandomCrop(size, padding)``. ``cutout``
sets a ``round(v * height)`` x ``round(v * width)`` box to 0, lying wholly inside the image as
Kornia's ``RandomErasing`` and Albumentations' ``CoarseDropout`` place theirs (DeVries and
Taylor let it overhang the border). The two draw a *position* per sample, ``(B, 2)`` in
``[0, 1)`` for the vertical and horizontal axis, which :func:`crop_offsets` and
:func:`cutout_boxes` turn into pixels; their parameter is the same fraction for both axes.

>>> import torch
>>> images = torch.full((2, 1, 4, 4), 0.25)
>>> OPS["brightness"].parameter(torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0]))
tensor([1.9000, 0.1000])
>>> OPS["invert"].apply(images, torch.zeros(2), torch.ones(2))[:, 0, 0, 0]
tensor([0.7500, 0.7500])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia import enhance
from torch import Tensor

from ..validation import closest_match

__all__ = ["AUTOAUGMENT_OPS", "BASE_OPS", "GEOMETRIC_OPS", "OPS", "OP_NAMES", "OP_SUBSETS",
           "RANDAUGMENT_OPS", "AFFINE_INVERSES", "Op", "crop_offsets", "cutout_boxes", "get_op",
           "parameters", "suggest", "warp_affine"]

# torchvision's translate range for AutoAugment and RandAugment: 150 px on a 331 px image
TRANSLATE_FRACTION = 150.0 / 331.0


def _per_sample(value: Tensor, images: Tensor) -> Tensor:
    """A ``(B,)`` tensor on the images' device and dtype."""
    return value.to(device=images.device, dtype=images.dtype)


def _identity(images: Tensor, _: Tensor | None) -> Tensor:
    return images


def _auto_contrast(images: Tensor, _: Tensor | None) -> Tensor:
    # as PIL / torchvision: a constant plane is left alone (kornia's normalize_min_max blackens it)
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    flat = high <= low
    scale = torch.where(flat, torch.ones_like(high), 1.0 / (high - low).clamp_min(1e-12))
    low = torch.where(flat, torch.zeros_like(low), low)
    return ((images - low) * scale).clamp(0.0, 1.0)


def _equalize(images: Tensor, _: Tensor | None) -> Tensor:
    return enhance.equalize(images)


def _invert(images: Tensor, _: Tensor | None) -> Tensor:
    return enhance.invert(images)


def _rotation_inverse(degrees: Tensor, height: int, width: int) -> Tensor:
    # kornia's rotation about the centre (counter-clockwise), inverted: the turn back
    radians = torch.deg2rad(degrees)
    cos, sin = torch.cos(radians), torch.sin(radians)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return torch.stack([cos, -sin, (1 - cos) * cx + sin * cy,
                        sin, cos, (1 - cos) * cy - sin * cx], dim=1).view(-1, 2, 3)


def _entry_inverse(row: int, column: int) -> Callable[[Tensor, int, int], Tensor]:
    """The inverse of a shear (a factor at ``(row, column)``) or of a shift (column 2, a
    fraction of the width for row 0, of the height for row 1): the identity with the entry
    negated."""
    def inverse(value: Tensor, height: int, width: int) -> Tensor:
        matrix = torch.eye(2, 3, device=value.device, dtype=value.dtype).repeat(len(value), 1, 1)
        matrix[:, row, column] = -value * ((width, height)[row] if column == 2 else 1)
        return matrix

    return inverse


# per geometric op: its parameter (B,) -> the (B, 2, 3) map from an output pixel (x, y, 1) to
# the source pixel it samples, the inverse of kornia's rotate / shear / translate matrix
AFFINE_INVERSES: dict[str, Callable[[Tensor, int, int], Tensor]] = {
    "rotate": _rotation_inverse,
    "shear_x": _entry_inverse(0, 1), "shear_y": _entry_inverse(1, 0),
    "translate_x": _entry_inverse(0, 2), "translate_y": _entry_inverse(1, 2)}


def warp_affine(images: Tensor, inverse: Tensor) -> Tensor:
    """Each sample resampled bilinearly at ``inverse`` (``(B, 2, 3)``, output pixel -> source
    pixel), zeros outside, as kornia's ``warp_affine`` with ``align_corners=True``; the grid is
    built by broadcasting (``affine_grid`` costs more than the sampling on small images)."""
    height, width = images.shape[-2:]
    # pixels -> grid_sample's [-1, 1], where -1 and 1 are the centres of the outer pixels
    scale = inverse.new_tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)])[:, None]
    normal = inverse.to(images.dtype) * scale - inverse.new_tensor([0.0, 0.0, 1.0])
    m = normal[:, :, :, None, None]
    u = torch.arange(width, device=images.device, dtype=images.dtype)
    v = torch.arange(height, device=images.device, dtype=images.dtype)[:, None]
    grid = torch.stack([m[:, 0, 0] * u + m[:, 0, 1] * v + m[:, 0, 2],
                        m[:, 1, 0] * u + m[:, 1, 1] * v + m[:, 1, 2]], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _geometric(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    def kernel(images: Tensor, value: Tensor) -> Tensor:
        return warp_affine(images, AFFINE_INVERSES[name](_per_sample(value, images),
                                                         *images.shape[-2:]))

    return kernel


def _brightness(images: Tensor, factor: Tensor) -> Tensor:
    # PIL's Brightness: a blend with black (kornia's adjust_brightness adds instead)
    return enhance.adjust_brightness_accumulative(images, _per_sample(factor, images))


def _color(images: Tensor, factor: Tensor) -> Tensor:
    # PIL's Color: a blend with the grey image; identity on 1-channel images
    return enhance.adjust_saturation_with_gray_subtraction(images, _per_sample(factor, images))


def _contrast(images: Tensor, factor: Tensor) -> Tensor:
    # PIL's Contrast: a blend with the mean grey level (kornia's adjust_contrast only scales)
    return enhance.adjust_contrast_with_mean_subtraction(images, _per_sample(factor, images))


def _sharpness(images: Tensor, factor: Tensor) -> Tensor:
    # kornia's sharpness (PIL's): a blend with the image smoothed by [[1, 1, 1], [1, 5, 1],
    # [1, 1, 1]] / 13 inside a one-pixel border, which stays; sums of shifted slices, not a
    # depthwise convolution (four times slower on small batches)
    centre = images[..., 1:-1, 1:-1]
    rows = images[..., :-2, :] + images[..., 1:-1, :] + images[..., 2:, :]
    smooth = ((rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * centre) / 13).clamp(0, 1)
    factor = _per_sample(factor, images).view(-1, 1, 1, 1)
    out = images.clone()
    out[..., 1:-1, 1:-1] = (smooth + (centre - smooth) * factor).clamp(0.0, 1.0)
    return out


def _posterize(images: Tensor, bits: Tensor) -> Tensor:
    return enhance.posterize(images, bits.round().long().to(images.device))


def _solarize(images: Tensor, threshold: Tensor) -> Tensor:
    return enhance.solarize(images, _per_sample(threshold, images))


def _pixels(fraction: Tensor, side: int) -> Tensor:
    """``round(fraction * side)`` as whole pixels, per sample."""
    return (fraction.to(torch.float64) * side).round().long()


def _position(position: Tensor, axis: int, choices: Tensor) -> Tensor:
    """One of ``choices`` (a count per sample) from a position in ``[0, 1)``."""
    index = (position[:, axis].to(torch.float64) * choices).floor().long()
    return torch.minimum(index, choices - 1)


def crop_offsets(fraction: Tensor, position: Tensor, height: int, width: int) -> Tensor:
    """``crop``'s whole-pixel shift ``(B, 2)`` (rows, columns), each in ``[-pad, pad]``.

    A sample padded by ``pad`` pixels and cropped at offset ``o`` in ``[0, 2 pad]`` shows the
    input's pixel ``i + o - pad`` at ``i``; the position picks ``o`` uniformly.

    >>> import torch
    >>> crop_offsets(torch.tensor([0.25, 0.25]), torch.tensor([[0.0, 0.99], [0.5, 0.5]]), 8, 8)
    tensor([[-2,  2],
            [ 0,  0]])
    """
    shifts = []
    for axis, side in enumerate((height, width)):
        pad = _pixels(fraction, side)
        shifts.append(_position(position, axis, 2 * pad + 1) - pad)
    return torch.stack(shifts, dim=1)


def cutout_boxes(fraction: Tensor, position: Tensor, height: int, width: int) -> Tensor:
    """``cutout``'s box ``(B, 4)`` as (top, left, height, width) in pixels, inside the image.

    >>> import torch
    >>> cutout_boxes(torch.tensor([0.5]), torch.tensor([[0.0, 0.99]]), 8, 8)
    tensor([[0, 4, 4, 4]])
    """
    columns = []
    for axis, side in enumerate((height, width)):
        size = _pixels(fraction, side)
        columns.append((_position(position, axis, side - size + 1), size))
    (top, box_height), (left, box_width) = columns
    return torch.stack([top, left, box_height, box_width], dim=1)


def shift_pixels(images: Tensor, shift: Tensor, flip: Tensor | None = None) -> Tensor:
    """Each sample moved by whole pixels, ``out[i, j] = images[i + dy, j + dx]`` (0 outside),
    then mirrored left to right where ``flip`` is true: one gather, exact copies."""
    batch, channels, height, width = images.shape
    device = images.device
    rows = torch.arange(height, device=device) + shift[:, :1].to(device)
    cols = torch.arange(width, device=device) + shift[:, 1:].to(device)
    if flip is not None:
        flip = flip.to(device)[:, None]
        cols = torch.where(flip, width - 1 - cols, cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None]
    index = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None]
    out = images.flatten(2).gather(2, index.flatten(1)[:, None].expand(-1, channels, -1))
    return torch.where(inside[:, None], out.view_as(images), 0.0)


def erase_boxes(images: Tensor, boxes: Tensor) -> Tensor:
    """``images`` with each sample's (top, left, height, width) box set to 0."""
    height, width = images.shape[-2:]
    top, left, box_height, box_width = boxes.to(images.device).unbind(1)
    rows = torch.arange(height, device=images.device)[None] - top[:, None]
    cols = torch.arange(width, device=images.device)[None] - left[:, None]
    inside = ((rows >= 0) & (rows < box_height[:, None]))[:, :, None] & \
        ((cols >= 0) & (cols < box_width[:, None]))[:, None]
    return images.masked_fill(inside[:, None], 0.0)


def _crop(images: Tensor, fraction: Tensor, position: Tensor) -> Tensor:
    return shift_pixels(images, crop_offsets(fraction, position, *images.shape[-2:]))


def _hflip(images: Tensor, _: Tensor | None) -> Tensor:
    return images.flip(-1)


def _cutout(images: Tensor, fraction: Tensor, position: Tensor) -> Tensor:
    return erase_boxes(images, cutout_boxes(fraction, position, *images.shape[-2:]))


@dataclass(frozen=True)
class Op:
    """One augmentation op: its kernel and how a magnitude in ``[0, 1]`` becomes its parameter.

    ``value_range`` is the parameter at magnitude 0 and at magnitude 1 (``None`` for ops without
    a magnitude); a signed op moves away from the first value in either direction.
    ``channels`` lists the channel counts the op supports (``None``: any); ``min_size`` is the
    smallest image side it works on. A ``positional`` op also takes a position per sample (see
    the module notes), and its kernel gets it as a third argument.

    >>> import torch
    >>> rotate = OPS["rotate"]
    >>> rotate.value_range, rotate.signed
    ((0.0, 30.0), True)
    >>> rotate.parameter(torch.tensor([0.5, 1.0]), torch.tensor([1.0, -1.0]))
    tensor([ 15., -30.])
    >>> rotate.apply(torch.rand(2, 3, 8, 8), torch.tensor([0.5, 1.0]), torch.ones(2)).shape
    torch.Size([2, 3, 8, 8])
    """

    name: str
    kernel: Callable[..., Tensor]
    value_range: tuple[float, float] | None = None
    signed: bool = False
    unit: str = ""
    channels: tuple[int, ...] | None = None
    min_size: int = 1
    positional: bool = False

    @property
    def has_magnitude(self) -> bool:
        return self.value_range is not None

    def parameter(self, magnitude: Tensor, sign: Tensor) -> Tensor | None:
        """The op's parameter for each sample (``None`` for ops without a magnitude)."""
        if self.value_range is None:
            return None
        start, end = self.value_range
        offset = (end - start) * magnitude.to(torch.float64)
        if self.signed:
            offset = offset * sign.to(torch.float64)
        return (start + offset).to(magnitude.dtype if magnitude.is_floating_point()
                                   else torch.get_default_dtype())

    def check_images(self, images: Tensor) -> None:
        """Raise ``ValueError`` if the op cannot work on images of this shape."""
        channels, height, width = images.shape[-3:]
        if self.channels is not None and channels not in self.channels:
            raise ValueError(f"op {self.name!r} works on images with {_or(self.channels)} "
                             f"channels, got {channels} channels")
        if min(height, width) < self.min_size:
            raise ValueError(f"op {self.name!r} needs images of at least {self.min_size} x "
                             f"{self.min_size} pixels, got {height} x {width}")

    def apply(self, images: Tensor, magnitude: Tensor, sign: Tensor,
              position: Tensor | None = None) -> Tensor:
        """Apply the op to a ``(B, C, H, W)`` batch with one magnitude and sign per sample.

        ``images`` are float values in ``[0, 1]``; ``magnitude`` is a ``(B,)`` tensor in
        ``[0, 1]``, ``sign`` a ``(B,)`` tensor of ``+1`` / ``-1`` (ignored by unsigned ops),
        ``position`` a ``(B, 2)`` tensor in ``[0, 1)`` (needed by positional ops only).
        """
        self.check_images(images)
        if self.positional and (position is None or tuple(position.shape) !=
                                (images.shape[0], 2)):
            got = None if position is None else tuple(position.shape)
            raise ValueError(f"op {self.name!r} needs a position of shape "
                             f"({images.shape[0]}, 2) in [0, 1), one per sample; got {got}")
        if images.shape[0] == 0:
            return images
        value = self.parameter(magnitude, sign)
        return self.kernel(images, value, position) if self.positional else \
            self.kernel(images, value)


def _or(values: Iterable[int]) -> str:
    values = [str(v) for v in values]
    return " or ".join(values) if len(values) < 3 else ", ".join(values[:-1]) + " or " + values[-1]


_ENHANCE = (1.0, 1.9)
_TABLE = (
    Op("identity", _identity),
    Op("auto_contrast", _auto_contrast),
    Op("equalize", _equalize),
    Op("invert", _invert),
    Op("rotate", _geometric("rotate"), (0.0, 30.0), signed=True, unit="degrees"),
    Op("shear_x", _geometric("shear_x"), (0.0, 0.3), signed=True, unit="shear factor"),
    Op("shear_y", _geometric("shear_y"), (0.0, 0.3), signed=True, unit="shear factor"),
    Op("translate_x", _geometric("translate_x"), (0.0, TRANSLATE_FRACTION), signed=True,
       unit="fraction of the width"),
    Op("translate_y", _geometric("translate_y"), (0.0, TRANSLATE_FRACTION), signed=True,
       unit="fraction of the height"),
    Op("brightness", _brightness, _ENHANCE, signed=True, unit="factor"),
    Op("color", _color, _ENHANCE, signed=True, unit="factor", channels=(1, 3)),
    Op("contrast", _contrast, _ENHANCE, signed=True, unit="factor"),
    Op("sharpness", _sharpness, _ENHANCE, signed=True, unit="factor", min_size=3),
    Op("posterize", _posterize, (8.0, 4.0), unit="bits"),
    Op("solarize", _solarize, (256.0 / 255.0, 0.0), unit="threshold"),
    Op("crop", _crop, (0.0, 0.25), unit="padding, fraction of the side", positional=True),
    Op("hflip", _hflip),
    Op("cutout", _cutout, (0.0, 0.5), unit="box side, fraction of the side", positional=True),
)

OPS: dict[str, Op] = {op.name: op for op in _TABLE}
OP_NAMES: tuple[str, ...] = tuple(OPS)
# op index + 1 (0: no op) -> the start and span of its parameter (zeros without a magnitude)
# and whether it is signed, for parameters()
_RANGES = [(0.0, 0.0)] + [OPS[name].value_range or (0.0, 0.0) for name in OP_NAMES]
_PARAMETER_TABLES = (torch.tensor([low for low, _ in _RANGES], dtype=torch.float64),
                     torch.tensor([high - low for low, high in _RANGES], dtype=torch.float64),
                     torch.tensor([False] + [OPS[name].signed for name in OP_NAMES]))


def parameters(op: Tensor, magnitude: Tensor, sign: Tensor) -> Tensor:
    """:meth:`Op.parameter` of ``OP_NAMES[op]`` for every entry at once, in its float64
    arithmetic; 0 where ``op`` is -1 (no op) or the op has no magnitude. CPU tensors.

    >>> import torch
    >>> parameters(torch.tensor([OP_NAMES.index("rotate"), -1]), torch.tensor([0.5, 0.5]),
    ...            torch.tensor([-1.0, 1.0]))
    tensor([-15.,   0.])
    """
    start, span, signed = (table[op + 1] for table in _PARAMETER_TABLES)
    offset = span * magnitude.to(torch.float64)
    return (start + torch.where(signed, offset * sign.to(torch.float64), offset)).to(
        magnitude.dtype)


# the standard pipeline's ops: random crop with padding, horizontal flip, Cutout
BASE_OPS: tuple[str, ...] = ("crop", "hflip", "cutout")
# the RandAugment paper's 14 ops (TrivialAugment uses the same set)
RANDAUGMENT_OPS: tuple[str, ...] = tuple(name for name in OP_NAMES
                                         if name not in ("invert", *BASE_OPS))
# the ops the published AutoAugment policies use
AUTOAUGMENT_OPS: tuple[str, ...] = tuple(name for name in OP_NAMES
                                         if name not in ("identity", *BASE_OPS))
# the affine ops
GEOMETRIC_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# named subsets of RandAugment's ops, for data where one kind of op changes the label
# (geometric ops on an orientation task, colour ops on grey or colour-coded images)
OP_SUBSETS: dict[str, tuple[str, ...]] = {
    "all": RANDAUGMENT_OPS,
    "geometric": ("identity", *GEOMETRIC_OPS),
    "photometric": tuple(name for name in RANDAUGMENT_OPS if name not in GEOMETRIC_OPS),
}


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def suggest(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""``.

    Spelling variants (``"ShearX"``, ``"auto-contrast"``) find their op first.

    >>> suggest("ShearX", OP_NAMES)
    " (did you mean 'shear_x'?)"
    """
    valid = list(valid)
    for candidate in valid:
        if _normalise(candidate) == _normalise(name):
            return f" (did you mean {candidate!r}?)"
    return closest_match(name, valid)


def get_op(name: str) -> Op:
    """The op called ``name``; an unknown name raises ``ValueError`` listing the valid ones.

    >>> get_op("rotate").unit
    'degrees'
    """
    if not isinstance(name, str) or name not in OPS:
        hint = suggest(name, OP_NAMES) if isinstance(name, str) else ""
        raise ValueError(f"unknown augmentation op {name!r}{hint}; valid ops are {list(OP_NAMES)}")
    return OPS[name]
