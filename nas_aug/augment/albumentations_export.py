"""A policy as an ``albumentations.Compose`` for CPU dataloaders: :func:`to_albumentations`.

Each op maps to its Albumentations counterpart at the same parameter ``v`` (the op's value at the
policy's magnitude, see :mod:`nas_aug.augment.ops`); a signed op becomes ``A.OneOf`` of its ``+``
and ``-`` transforms. ``tolerance`` is the mean absolute difference, in 8-bit levels, that the
parity tests allow between our op on float images and the transform on the same images as uint8.

=============  ========================================================  ====  ===========
op             Albumentations transform (``A = albumentations``)         tol.  measured
=============  ========================================================  ====  ===========
identity       ``A.NoOp``                                                0     0 / 0
auto_contrast  ``A.AutoContrast(cutoff=0, method="pil")``                1     0.24 / 0.60
equalize       none (see ``UNSUPPORTED``)                                --    3.9 / 38
invert         ``A.InvertImg``                                           0     0 / 0
rotate         ``A.Affine(rotate=(v, v))``                               1     0.22 / 0.17
shear_x        ``AffineAboutOrigin(shear={"x": -atan(v)})``, degrees     1     0.19 / 0.15
shear_y        ``AffineAboutOrigin(shear={"y": -atan(v)})``, degrees     1     0.21 / 0.14
translate_x    ``A.Affine(translate_percent={"x": (v, v)})``             1     0 / 0
translate_y    ``A.Affine(translate_percent={"y": (v, v)})``             1     0 / 0
brightness     ``A.ColorJitter(brightness=(v, v))``, the rest neutral    1     0.48 / 0.35
color          ``A.ColorJitter(saturation=(v, v))``                      1     0.28 / 0
contrast       ``A.ColorJitter(contrast=(v, v))``                        1     0.51 / 0.53
sharpness      ``A.Sharpen`` (v > 1) or ``A.GaussianBlur`` (v < 1)       2     1.01 / 0.63
posterize      ``A.Posterize(num_bits=round(v))``; ``A.NoOp`` at 8 bits  0     0 / 0
solarize       ``A.Solarize(threshold_range=(v, v))``; ``A.NoOp`` > 1    0     0 / 0
crop           ``PaddedRandomCrop(v)``: a whole-pixel ``A.Affine`` shift     0     0 / 0
hflip          ``A.HorizontalFlip``                                      0     0 / 0
cutout         ``Cutout(v)``: ``A.CoarseDropout`` of one box, fill 0     0     0 / 0
=============  ========================================================  ====  ===========

"measured" is the worst mean difference over both signs at the tests' magnitude (0.7; for
translate a quarter of the side) on their photo crops / upsampled digits
(``tests/augment/test_augment_export.py``). Why the tolerances:

* colour ops: Albumentations rounds to uint8 (ours stays float): under one level;
  ``auto_contrast`` also rounds its look-up table and ``cv2.calcHist`` over ``[0, 255)`` leaves
  level 255 out of the histogram, which stretches images that reach white a little more;
* ``rotate`` / ``shear``: OpenCV's bilinear warp uses 5-bit fixed-point weights and rounds;
* ``translate``: Albumentations shifts by whole pixels, ``int(v * side)`` (toward zero), so the
  two agree where ``v * side`` is whole (the test's magnitude) and otherwise differ by a shift of
  under one pixel (at magnitude 1, 14.5 px on 32 px photos: 4.4 levels, 9.5 on sharp digits);
* ``sharpness``: sharpening is PIL's kernel exactly (``A.Sharpen`` with ``lightness=1`` and
  ``alpha = (v - 1) / 13``) except on the one-pixel border, which PIL and ours leave alone and
  OpenCV reflects; blurring (``v < 1``) has no exact counterpart (``A.Sharpen`` only sharpens) and
  uses a 3 x 3 ``A.GaussianBlur`` whose centre weight matches PIL's blend of its smoothing kernel.

``AffineAboutOrigin`` is ``A.Affine`` shearing about pixel (0, 0), as torchvision and ours do;
``A.Affine`` shears about the centre, which would add a shift of ``v * (H - 1) / 2`` pixels.
``PaddedRandomCrop`` and ``Cutout`` learn each image's size and place the crop and the box as
ours does (:func:`~nas_aug.augment.ops.crop_offsets`, :func:`~nas_aug.augment.ops.cutout_boxes`):
a crop with zero padding is a whole-pixel shift, which ``A.Affine`` applies to masks, boxes and
keypoints too.

Importing this module sets ``NO_ALBUMENTATIONS_UPDATE=1`` unless it is set: otherwise importing
Albumentations asks PyPI for a newer version, and nothing here downloads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402
from albumentations.augmentations.geometric import functional as fgeometric  # noqa: E402

from .kornia_export import op_parameter  # noqa: E402
from .ops import crop_offsets, cutout_boxes, get_op  # noqa: E402
from .policy import OpSpec, Policy  # noqa: E402

__all__ = ["ALBUMENTATIONS_OPS", "UNSUPPORTED", "AffineAboutOrigin", "AlbumentationsOp", "Cutout",
           "PaddedRandomCrop", "albumentations_transform", "to_albumentations"]

if int(A.__version__.split(".")[0]) < 2:
    raise ImportError(f"nas_aug's Albumentations export needs albumentations >= 2.0, found "
                      f"{A.__version__}; pip install -U albumentations")


class AffineAboutOrigin(A.Affine):
    """``A.Affine`` whose shear, rotation and scale act about pixel (0, 0), not the image centre.

    torchvision's ShearX / ShearY (and our ``shear_x`` / ``shear_y``) keep the top-left pixel in
    place; ``A.Affine`` keeps the centre ``c``, which shifts the result by ``(L - I) c`` for the
    linear part ``L``. This subclass moves it back, for images, masks, boxes and keypoints alike.

    >>> import numpy as np
    >>> image = np.zeros((9, 9, 1), np.uint8)
    >>> image[0, 0] = image[8, 0] = 255
    >>> out = AffineAboutOrigin(shear={"x": (-45, -45), "y": (0, 0)}, p=1)(image=image)["image"]
    >>> int(out[0, 0, 0]), int(out[8, 8, 0])  # x + y: the origin stays, the bottom row moves by 8
    (255, 255)
    """

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        out = super().get_params_dependent_on_data(params, data)
        # image pixels and box coordinates differ by half a pixel in both the centre and the
        # origin, so one correction serves both matrices
        centre = np.array(fgeometric.center(params["shape"][:2]))
        for key in ("matrix", "bbox_matrix"):
            matrix = np.array(out[key], dtype=np.float64)
            matrix[:2, 2] += (matrix[:2, :2] - np.eye(2)) @ centre
            out[key] = matrix
        return out


def _position(transform: A.BasicTransform, pinned: tuple[float, float] | None) -> torch.Tensor:
    """The transform's own draw of a position in [0, 1)^2, or the pinned one."""
    if pinned is None:
        pinned = (transform.py_random.random(), transform.py_random.random())
    return torch.tensor([pinned], dtype=torch.float64)


class PaddedRandomCrop(A.Affine):
    """A random crop back to the image's size after zero padding of ``fraction`` of each side,
    as our ``crop``: a whole-pixel shift of up to the padding; ``position`` pins the offset.

    >>> import numpy as np
    >>> image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    >>> out = PaddedRandomCrop(0.25, position=(0.0, 0.99), p=1)(image=image)["image"]
    >>> out[..., 0].tolist()  # one pixel down and one left: row 0 is padding
    [[0, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0]]
    """

    def __init__(self, fraction: float, position: tuple[float, float] | None = None,
                 p: float = 0.5) -> None:
        super().__init__(interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0,
                         p=p)
        self.fraction, self.position = fraction, position

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        out = super().get_params_dependent_on_data(params, data)  # the identity: no translate
        height, width = params["shape"][:2]
        dy, dx = crop_offsets(torch.tensor([self.fraction]), _position(self, self.position),
                              height, width)[0].tolist()
        for key in ("matrix", "bbox_matrix"):  # out[i, j] = image[i + dy, j + dx]
            matrix = np.array(out[key], dtype=np.float64)
            matrix[:2, 2] -= (dx, dy)
            out[key] = matrix
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("fraction", "position")


class Cutout(A.CoarseDropout):
    """One box of ``fraction`` of each side set to 0, placed as our ``cutout`` places it
    (wholly inside the image); ``position`` pins it.

    >>> import numpy as np
    >>> out = Cutout(0.5, position=(0.0, 0.99), p=1)(image=np.ones((4, 4, 1), np.uint8))
    >>> out["image"][..., 0].tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    """

    def __init__(self, fraction: float, position: tuple[float, float] | None = None,
                 p: float = 0.5) -> None:
        super().__init__(num_holes_range=(1, 1), fill=0, p=p)
        self.fraction, self.position = fraction, position

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        top, left, box_height, box_width = cutout_boxes(
            torch.tensor([self.fraction]), _position(self, self.position), height, width)[0]
        holes = np.array([[left, top, left + box_width, top + box_height]], dtype=np.int64)
        return {"holes": holes, "seed": self.random_generator.integers(0, 2**32 - 1)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("fraction", "position")


@dataclass(frozen=True)
class AlbumentationsOp:
    """How one op becomes an Albumentations transform.

    ``build(value, p)`` makes the transform at the op's parameter ``value`` (``None`` for ops
    without a magnitude) with probability ``p``; ``build`` is ``None`` for an op with no faithful
    counterpart, and ``note`` says why. ``tolerance`` is in 8-bit levels (see the module notes).

    >>> ALBUMENTATIONS_OPS["rotate"].transform
    'A.Affine(rotate=(v, v))'
    >>> ALBUMENTATIONS_OPS["equalize"].build is None
    True
    """

    transform: str
    build: Callable[[float | None, float], A.BasicTransform] | None
    tolerance: float | None
    note: str


def _noop_or(make: Callable[[float, float], A.BasicTransform], neutral: Callable[[float], bool]
             ) -> Callable[[float | None, float], A.BasicTransform]:
    def build(value: float | None, p: float) -> A.BasicTransform:
        return A.NoOp(p=p) if neutral(value) else make(value, p)

    return build


def _affine(**kwargs: Any) -> A.Affine:
    return A.Affine(interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0,
                    **kwargs)  # as ours: bilinear, zeros outside


def _shear(axis: str) -> Callable[[float | None, float], A.BasicTransform]:
    def build(value: float | None, p: float) -> A.BasicTransform:
        # A.Affine's shear is x - tan(angle) * y; ours (torchvision's) is x + factor * y
        degrees = -math.degrees(math.atan(value))
        shear = {"x": (0.0, 0.0), "y": (0.0, 0.0), axis: (degrees, degrees)}
        return AffineAboutOrigin(shear=shear, interpolation=cv2.INTER_LINEAR,
                                 border_mode=cv2.BORDER_CONSTANT, fill=0, p=p)

    return build


def _translate(axis: str) -> Callable[[float | None, float], A.BasicTransform]:
    def build(value: float | None, p: float) -> A.BasicTransform:
        return _affine(translate_percent={"x": (0.0, 0.0), "y": (0.0, 0.0), axis: (value, value)},
                       p=p)

    return build


def _jitter(name: str) -> Callable[[float | None, float], A.BasicTransform]:
    def build(value: float | None, p: float) -> A.BasicTransform:
        factors = {"brightness": (1.0, 1.0), "contrast": (1.0, 1.0), "saturation": (1.0, 1.0),
                   name: (value, value)}
        return A.ColorJitter(**factors, hue=(0.0, 0.0), p=p)

    return build


def _blur_sigma(factor: float) -> float:
    """The 3 x 3 Gaussian whose centre weight is PIL's ``factor`` blend of its smoothing kernel."""
    centre = factor + (1.0 - factor) * 5.0 / 13.0  # PIL smooths with [[1, 1, 1], [1, 5, 1], ...]
    edge = (1.0 / math.sqrt(centre) - 1.0) / 2.0  # a 1-D kernel [edge, 1, edge] / (1 + 2 edge)
    return math.sqrt(-1.0 / (2.0 * math.log(edge)))


def _sharpness(value: float | None, p: float) -> A.BasicTransform:
    if value > 1:
        alpha = (value - 1.0) / 13.0  # PIL: x + (v - 1) / 13 * (8 x - neighbours)
        return A.Sharpen(alpha=(alpha, alpha), lightness=(1.0, 1.0), method="kernel", p=p)
    if value < 1:
        sigma = _blur_sigma(value)
        return A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(sigma, sigma), p=p)
    return A.NoOp(p=p)


_ROUNDING = "uint8 rounding (ours stays float)"
_WARP = "OpenCV's bilinear warp: 5-bit fixed-point weights, uint8 rounding"
ALBUMENTATIONS_OPS: dict[str, AlbumentationsOp] = {
    "identity": AlbumentationsOp("A.NoOp", lambda value, p: A.NoOp(p=p), 0.0, "exact"),
    "auto_contrast": AlbumentationsOp(
        'A.AutoContrast(cutoff=0, method="pil")',
        lambda value, p: A.AutoContrast(cutoff=0, method="pil", p=p), 1.0,
        "look-up table rounding; cv2.calcHist over [0, 255) leaves level 255 out"),
    "equalize": AlbumentationsOp(
        "none", None, None,
        "A.Equalize follows neither Pillow nor ours: mode='pil' maps each level through the pixel "
        "count up to and including it (Pillow: below it), which turns black backgrounds grey, "
        "and mode='cv' is OpenCV's formula; mean difference 3.9 (photos) and 38 (digits) levels"),
    "invert": AlbumentationsOp("A.InvertImg", lambda value, p: A.InvertImg(p=p), 0.0, "exact"),
    "rotate": AlbumentationsOp("A.Affine(rotate=(v, v))",
                               lambda value, p: _affine(rotate=(value, value), p=p), 1.0, _WARP),
    "shear_x": AlbumentationsOp('AffineAboutOrigin(shear={"x": -atan(v) degrees})', _shear("x"),
                                1.0, _WARP),
    "shear_y": AlbumentationsOp('AffineAboutOrigin(shear={"y": -atan(v) degrees})', _shear("y"),
                                1.0, _WARP),
    "translate_x": AlbumentationsOp(
        'A.Affine(translate_percent={"x": (v, v)})', _translate("x"), 1.0,
        "whole-pixel shifts int(v * width): exact where that is whole, else under a pixel off"),
    "translate_y": AlbumentationsOp(
        'A.Affine(translate_percent={"y": (v, v)})', _translate("y"), 1.0,
        "whole-pixel shifts int(v * height): exact where that is whole, else under a pixel off"),
    "brightness": AlbumentationsOp("A.ColorJitter(brightness=(v, v))", _jitter("brightness"), 1.0,
                                   _ROUNDING),
    "color": AlbumentationsOp("A.ColorJitter(saturation=(v, v))", _jitter("saturation"), 1.0,
                              _ROUNDING),
    "contrast": AlbumentationsOp("A.ColorJitter(contrast=(v, v))", _jitter("contrast"), 1.0,
                                 _ROUNDING),
    "sharpness": AlbumentationsOp(
        "A.Sharpen(alpha=(v - 1) / 13, lightness=1) if v > 1, A.GaussianBlur(3, sigma(v)) if v < 1",
        _sharpness, 2.0,
        "sharpening exact but for the 1-pixel border (kept by PIL, reflected by OpenCV); blurring "
        "approximates PIL's smoothing kernel by a Gaussian with the same centre weight"),
    "posterize": AlbumentationsOp(
        "A.Posterize(num_bits=round(v)); A.NoOp at 8 bits",
        _noop_or(lambda value, p: A.Posterize(num_bits=round(value), p=p),
                 lambda value: round(value) >= 8), 0.0, "exact"),
    "solarize": AlbumentationsOp(
        "A.Solarize(threshold_range=(v, v)); A.NoOp if v > 1",
        _noop_or(lambda value, p: A.Solarize(threshold_range=(value, value), p=p),
                 lambda value: value > 1), 0.0, "exact"),
    "crop": AlbumentationsOp("PaddedRandomCrop(v)", _noop_or(
        lambda value, p: PaddedRandomCrop(value, p=p), lambda value: value == 0), 0.0, "exact"),
    "hflip": AlbumentationsOp("A.HorizontalFlip", lambda value, p: A.HorizontalFlip(p=p), 0.0,
                              "exact"),
    "cutout": AlbumentationsOp("Cutout(v)", _noop_or(
        lambda value, p: Cutout(value, p=p), lambda value: value == 0), 0.0, "exact"),
}
# op -> why it has no Albumentations counterpart
UNSUPPORTED: dict[str, str] = {name: entry.note for name, entry in ALBUMENTATIONS_OPS.items()
                               if entry.build is None}


def albumentations_transform(spec: OpSpec, sign: float | None = None,
                             position: tuple[float, float] | None = None
                             ) -> A.BasicTransform | None:
    """The Albumentations transform for one op of a policy (``None``: no counterpart).

    A signed op becomes ``A.OneOf`` of its two signs with the op's probability; ``sign=1`` or
    ``-1`` gives just that sign's transform. ``position`` pins where ``crop`` and ``cutout``
    land (each image draws its own otherwise).

    >>> from nas_aug.augment import OpSpec
    >>> albumentations_transform(OpSpec("rotate", 0.5, 1.0), sign=-1.0).rotate
    (-30.0, -30.0)
    >>> type(albumentations_transform(OpSpec("rotate", 0.5, 1.0))).__name__
    'OneOf'
    """
    build = ALBUMENTATIONS_OPS[spec.name].build
    if build is None:
        return None
    op = get_op(spec.name)
    if sign is not None or not op.signed or spec.magnitude == 0:
        transform = build(op_parameter(spec.name, spec.magnitude, 1.0 if sign is None else sign),
                          spec.probability)
        if op.positional and hasattr(transform, "position"):
            transform.position = position
        return transform
    return A.OneOf([build(op_parameter(spec.name, spec.magnitude, s), 1.0) for s in (1.0, -1.0)],
                   p=spec.probability)


def to_albumentations(policy: Policy, strict: bool = False) -> tuple[A.Compose, list[str]]:
    """``policy`` as an ``albumentations.Compose`` for uint8 HWC images, and the ops it had to
    leave out.

    Each sub-policy becomes an ``A.Sequential`` of its ops (each with its own probability); an
    ``A.OneOf`` picks one sub-policy per image, ``draws_per_sample`` times in a row, as ours does
    per sample, between the policy's ``before`` and ``after`` ops. Ops with no faithful
    counterpart (``UNSUPPORTED``) are left out of their
    sub-policies and listed; with ``strict=True`` they raise ``ValueError`` instead.

    >>> import numpy as np
    >>> from nas_aug.augment import Policy
    >>> transform, unsupported = to_albumentations(Policy.preset("autoaugment_svhn"))
    >>> unsupported
    ['equalize']
    >>> transform(image=np.zeros((32, 32, 3), np.uint8))["image"].shape
    (32, 32, 3)
    >>> to_albumentations(Policy.preset("autoaugment_svhn"), strict=True)
    Traceback (most recent call last):
    ...
    ValueError: policy 'autoaugment_svhn' uses ops with no faithful Albumentations counterpart: ...
    """
    if not isinstance(policy, Policy):
        raise ValueError(f"expected a Policy (Policy.preset(...), RandAugment(...), "
                         f"Policy([...])), got {type(policy).__name__}: {policy!r}")
    unsupported = [name for name in policy.op_names if name in UNSUPPORTED]
    if unsupported and strict:
        reasons = "; ".join(f"{name}: {UNSUPPORTED[name]}" for name in unsupported)
        raise ValueError(f"policy {policy.name!r} uses ops with no faithful Albumentations "
                         f"counterpart: {unsupported} ({reasons}); pass strict=False to export "
                         "the policy without them")

    def sub_policy(ops: tuple[OpSpec, ...]) -> A.Sequential:
        transforms = (albumentations_transform(spec) for spec in ops)
        return A.Sequential([t for t in transforms if t is not None], p=1.0)

    draws = [A.OneOf([sub_policy(ops) for ops in policy.sub_policies], p=1.0)
             for _ in range(policy.draws_per_sample)]
    fixed = [[sub_policy(ops)] if ops else [] for ops in (policy.before, policy.after)]
    return A.Compose(fixed[0] + draws + fixed[1]), unsupported
