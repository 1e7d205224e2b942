"""A policy as a ``kornia.augmentation`` module: :func:`to_kornia` and its op table.

Our ops are built on ``kornia.enhance`` and ``kornia.geometry``, so each maps to the kornia
augmentation that runs the same kernel, its random range pinned to the op's parameter ``(v, v)``
and wrapped in a ``kornia.augmentation.auto`` operation (probability per sample). At a fixed
magnitude and sign the two agree to float rounding.

=============  ===============================================================================
op             kornia augmentation (``K = kornia.augmentation``), parameter ``v``
=============  ===============================================================================
identity       (left out: it does nothing)
auto_contrast  ``K.RandomAutoContrast`` (a constant channel turns black; ours keeps it)
equalize       ``K.RandomEqualize``
invert         ``K.RandomInvert``
rotate         ``K.RandomRotation((v, v))``, sign drawn per sample
shear_x/_y     ``K.RandomShear`` at ``-atan(v)`` degrees, about pixel (0, 0) as ours
translate_x/y  ``K.RandomTranslate`` by the fraction ``v``, sign drawn per sample
brightness     ``K.ColorJitter(brightness=(v, v))``: torchvision's (PIL's) blend, sign about 1
color          ``K.ColorJitter(saturation=(v, v))``, sign about 1
contrast       ``K.ColorJitter(contrast=(v, v))``, sign about 1
sharpness      ``K.RandomSharpness((v, v))``, sign about 1
posterize      ``K.RandomPosterize((b, b))`` with ``b = round(v)`` bits
solarize       ``K.RandomSolarize((v, v), additions=0)``; left out where ``v > 1`` (inverts nothing)
crop           ``K.RandomCrop`` to the input's size after padding ``round(v * side)`` zeros
hflip          ``K.RandomHorizontalFlip``
cutout         ``K.RandomErasing`` of a ``round(v * side)`` box, value 0
=============  ===============================================================================

``crop`` and ``cutout`` learn the image size from each batch and place the crop and the box as
ours does (:func:`~nas_aug.augment.ops.crop_offsets`, :func:`~nas_aug.augment.ops.cutout_boxes`),
from torch's global generator; kornia's kernels then crop and erase.

kornia's own ``Brightness`` / ``Contrast`` / ``Saturate`` auto operations are not used: they add
to the brightness, scale without the mean and work in HSV, where ours follow PIL.

**Where the semantics differ.** Like kornia's ``AutoAugment`` / ``RandAugment``, the module
chooses its ``draws_per_sample`` sub-policies once per *batch*; ours (:class:`PolicyAugment`)
chooses per sample. Within the chosen sub-policies each op still fires per sample with its
probability, and each signed op draws its sign per sample (from torch's global generator, as
kornia does).

>>> import torch
>>> from nas_aug.augment import OpSpec, Policy
>>> augment = to_kornia(Policy([(OpSpec("rotate", 0.5, 1.0), OpSpec("invert", 0.2, 0.0))]))
>>> augment(torch.rand(4, 3, 16, 16)).shape
torch.Size([4, 3, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import PolicyAugmentBase
from kornia.augmentation.auto.operations import OperationBase
from kornia.augmentation.auto.operations.policy import PolicySequential
from kornia.augmentation.container.params import ParamItem
from kornia.augmentation.random_generator import CropGenerator
from torch import nn

from .ops import crop_offsets, cutout_boxes, get_op
from .policy import OpSpec, Policy

__all__ = ["KORNIA_OPS", "KorniaOp", "KorniaPolicy", "kornia_operation", "op_parameter",
           "to_kornia"]


class _RandomShearAboutOrigin(K.RandomShear):
    """``K.RandomShear`` about pixel (0, 0), as :func:`kornia.geometry.transform.shear` (and our
    ``shear_x`` / ``shear_y``) shear; ``K.RandomShear`` shears about the image centre."""

    def generate_parameters(self, batch_shape: torch.Size) -> dict[str, torch.Tensor]:
        params = super().generate_parameters(batch_shape)
        params["center"] = torch.zeros_like(params["center"])
        return params


def _positions(batch: int, pinned: torch.Tensor | None) -> torch.Tensor:
    """A position per sample from torch's global generator, or the pinned one for all."""
    return torch.rand(batch, 2) if pinned is None else pinned.expand(batch, 2)


class _PaddedRandomCrop(K.RandomCrop):
    """``K.RandomCrop`` back to each input's own size after zero padding of ``fraction`` of
    each side, at the offset our ``crop`` draws (``position`` pins it, for tests)."""

    def __init__(self, fraction: float, p: float) -> None:
        super().__init__((1, 1), padding=0, fill=0.0, p=p)
        self.fraction = fraction
        self.position: torch.Tensor | None = None

    def compute_padding(self, shape: tuple[int, ...], flags: dict | None = None) -> list[int]:
        pad_y, pad_x = (round(self.fraction * side) for side in shape[-2:])
        return [pad_x, pad_x, pad_y, pad_y]  # left, right, top, bottom

    def forward_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        size = tuple(int(side) for side in batch_shape[-2:])
        if self.flags["size"] != size:
            self.flags["size"], self._param_generator = size, CropGenerator(size)
        params = super().forward_parameters(batch_shape)
        batch, (height, width) = batch_shape[0], size
        pad_x, _, pad_y, _ = self.compute_padding(size)
        shift = crop_offsets(torch.full((batch,), self.fraction),
                             _positions(batch, self.position), height, width)
        top, left = shift[:, 0] + pad_y, shift[:, 1] + pad_x  # the crop's corner when padded
        corners = torch.stack([torch.stack([left, top], 1), torch.stack([left + width - 1, top], 1),
                               torch.stack([left + width - 1, top + height - 1], 1),
                               torch.stack([left, top + height - 1], 1)], dim=1)
        params["src"] = corners.to(params["src"])
        return params


class _Cutout(K.RandomErasing):
    """``K.RandomErasing`` of a box of ``fraction`` of each side, placed as our ``cutout``
    places it (``position`` pins it, for tests), filled with 0."""

    def __init__(self, fraction: float, p: float) -> None:
        super().__init__(value=0.0, p=p)
        self.fraction = fraction
        self.position: torch.Tensor | None = None

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        batch, (height, width) = batch_shape[0], batch_shape[-2:]
        top, left, box_height, box_width = cutout_boxes(
            torch.full((batch,), self.fraction), _positions(batch, self.position),
            int(height), int(width)).unbind(1)
        return {"xs": left, "ys": top, "widths": box_width, "heights": box_height,
                "values": torch.zeros(batch)}


class _SignedOperation(OperationBase):
    """A kornia auto operation whose parameter ``key`` is reflected about ``centre`` per sample:
    with probability 1/2 (``sign=None``), never (``sign=1``) or always (``sign=-1``)."""

    def __init__(self, augmentation: K.AugmentationBase2D, key: str, centre: float,
                 sign: float | None = None) -> None:
        super().__init__(augmentation)
        self.key, self.centre, self.sign = key, centre, sign

    def forward_parameters(self, batch_shape: torch.Size,
                           mag: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        params = super().forward_parameters(batch_shape, mag)
        value = params[self.key]
        if self.sign is None:
            flip = (torch.rand(value.shape[0]) < 0.5).to(value.device)
        else:
            flip = torch.full((value.shape[0],), self.sign < 0, device=value.device)
        params[self.key] = torch.where(flip, 2 * self.centre - value, value)
        return params

    def extra_repr(self) -> str:
        return f"key={self.key!r}, centre={self.centre}, sign={self.sign}"


@dataclass(frozen=True)
class KorniaOp:
    """How one op becomes a kornia augmentation.

    ``build(value, p)`` makes the augmentation at the op's parameter ``value`` (``None`` for ops
    without a magnitude) with probability ``p``, or returns ``None`` where the op does nothing at
    that value; a signed op's ``key`` is the kornia parameter its sign reflects about ``centre``.

    >>> KORNIA_OPS["rotate"].key, KORNIA_OPS["brightness"].centre
    ('degrees', 1.0)
    """

    augmentation: str
    build: Callable[[float | None, float], K.AugmentationBase2D | None]
    key: str | None = None
    centre: float = 0.0


def _shear(axis: int) -> Callable[[float | None, float], K.AugmentationBase2D]:
    def build(value: float | None, p: float) -> K.AugmentationBase2D:
        # kornia's shear matrix is x - tan(angle) * y; ours (torchvision's) is x + factor * y
        degrees = -math.degrees(math.atan(value))
        ranges = [0.0, 0.0, 0.0, 0.0]
        ranges[2 * axis:2 * axis + 2] = [degrees, degrees]
        return _RandomShearAboutOrigin(tuple(ranges), align_corners=True, p=p)

    return build


def _jitter(step: int, name: str) -> Callable[[float | None, float], K.AugmentationBase2D]:
    def build(value: float | None, p: float) -> K.AugmentationBase2D:
        return K.ColorJitter(**{name: (value, value)}, order=(step,), p=p)

    return build


KORNIA_OPS: dict[str, KorniaOp] = {
    "identity": KorniaOp("(none)", lambda value, p: None),
    "auto_contrast": KorniaOp("K.RandomAutoContrast", lambda value, p: K.RandomAutoContrast(p=p)),
    "equalize": KorniaOp("K.RandomEqualize", lambda value, p: K.RandomEqualize(p=p)),
    "invert": KorniaOp("K.RandomInvert", lambda value, p: K.RandomInvert(p=p)),
    "rotate": KorniaOp("K.RandomRotation", lambda value, p: K.RandomRotation((value, value), p=p),
                       "degrees"),
    "shear_x": KorniaOp("K.RandomShear about (0, 0)", _shear(0), "shear_x"),
    "shear_y": KorniaOp("K.RandomShear about (0, 0)", _shear(1), "shear_y"),
    "translate_x": KorniaOp("K.RandomTranslate", lambda value, p: K.RandomTranslate(
        (value, value), None, align_corners=True, p=p), "translate_x"),
    "translate_y": KorniaOp("K.RandomTranslate", lambda value, p: K.RandomTranslate(
        None, (value, value), align_corners=True, p=p), "translate_y"),
    "brightness": KorniaOp("K.ColorJitter", _jitter(0, "brightness"), "brightness_factor", 1.0),
    "color": KorniaOp("K.ColorJitter", _jitter(2, "saturation"), "saturation_factor", 1.0),
    "contrast": KorniaOp("K.ColorJitter", _jitter(1, "contrast"), "contrast_factor", 1.0),
    "sharpness": KorniaOp("K.RandomSharpness", lambda value, p: K.RandomSharpness(
        (value, value), p=p), "sharpness", 1.0),
    "posterize": KorniaOp("K.RandomPosterize", lambda value, p: K.RandomPosterize(
        (round(value), round(value)), p=p)),
    "solarize": KorniaOp("K.RandomSolarize", lambda value, p: None if value > 1 else
                         K.RandomSolarize((value, value), additions=0.0, p=p)),
    "crop": KorniaOp("K.RandomCrop with padding", lambda value, p: None if value == 0 else
                     _PaddedRandomCrop(value, p)),
    "hflip": KorniaOp("K.RandomHorizontalFlip", lambda value, p: K.RandomHorizontalFlip(p=p)),
    "cutout": KorniaOp("K.RandomErasing", lambda value, p: None if value == 0 else
                       _Cutout(value, p)),
}


def op_parameter(name: str, magnitude: float, sign: float = 1.0) -> float | None:
    """Op ``name``'s parameter at ``magnitude`` and ``sign`` (``None`` for ops without one).

    >>> op_parameter("rotate", 0.5, -1.0)
    -15.0
    """
    value = get_op(name).parameter(torch.tensor([float(magnitude)], dtype=torch.float64),
                                   torch.tensor([float(sign)], dtype=torch.float64))
    return None if value is None else value.item()


def kornia_operation(spec: OpSpec, sign: float | None = None,
                     position: tuple[float, float] | None = None) -> OperationBase | None:
    """The kornia auto operation for one op of a policy (``None`` where it does nothing).

    A signed op draws its sign per sample; ``sign=1`` or ``-1`` pins it (for tests and replays).
    ``crop`` and ``cutout`` draw a position per sample; ``position`` pins it likewise.

    >>> import torch
    >>> from nas_aug.augment import OpSpec
    >>> op = kornia_operation(OpSpec("invert", 1.0, 0.0))
    >>> op(torch.zeros(1, 1, 2, 2)).flatten().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    table, op = KORNIA_OPS[spec.name], get_op(spec.name)
    # built at sign +1; a signed operation reflects it per sample
    augmentation = table.build(op_parameter(spec.name, spec.magnitude), spec.probability)
    if augmentation is None:
        return None
    if op.positional and position is not None:
        augmentation.position = torch.tensor([position], dtype=torch.float64)
    if not op.signed or table.key is None:
        return OperationBase(augmentation)
    return _SignedOperation(augmentation, table.key, table.centre, sign)


class KorniaPolicy(PolicyAugmentBase):
    """A :class:`~nas_aug.augment.policy.Policy` as a kornia policy augmentation.

    Each sub-policy becomes a ``PolicySequential`` of kornia auto operations (see the module's
    table). Every forward call draws ``policy.draws_per_sample`` sub-policies with replacement for
    the whole batch and runs them in order, between the policy's ``before`` and ``after`` ops;
    ``forward(images, params=module._params)`` replays a call. The module has no trainable
    parameters.

    >>> import torch
    >>> from nas_aug.augment import RandAugment
    >>> augment = KorniaPolicy(RandAugment(num_ops=2, magnitude=0.3))
    >>> len(augment), augment.draws_per_sample
    (14, 2)
    >>> images = torch.rand(4, 3, 16, 16)
    >>> out = augment(images)
    >>> torch.allclose(augment(images, params=augment._params), out)
    True
    """

    def __init__(self, policy: Policy) -> None:
        if not isinstance(policy, Policy):
            raise ValueError(f"expected a Policy (Policy.preset(...), RandAugment(...), "
                             f"Policy([...])), got {type(policy).__name__}: {policy!r}")
        fixed = [ops for ops in (policy.before, policy.after) if ops]
        super().__init__([*policy.sub_policies, *fixed])
        self.policy = policy
        self.draws_per_sample = policy.draws_per_sample
        self.requires_grad_(False)  # kornia keeps a legacy probability nn.Parameter per op

    def compose_subpolicy_sequential(self, subpolicy: tuple[OpSpec, ...]) -> PolicySequential:
        operations = (kornia_operation(spec) for spec in subpolicy)
        return PolicySequential(*(op for op in operations if op is not None))

    def get_forward_sequence(self, params: list[ParamItem] | None = None
                             ) -> Iterator[tuple[str, nn.Module]]:
        if params is None:
            count = len(self.policy.sub_policies)
            indices = torch.randint(count, (self.draws_per_sample,))
            if self.policy.before:
                indices = torch.cat([torch.tensor([count]), indices])
            if self.policy.after:
                indices = torch.cat([indices, torch.tensor([len(self) - 1])])
            return self.get_children_by_indices(indices)
        return self.get_children_by_params(params)

    def extra_repr(self) -> str:
        return f"policy={self.policy.name!r}, draws_per_sample={self.draws_per_sample}"


def to_kornia(policy: Policy) -> KorniaPolicy:
    """``policy`` as a ``kornia.augmentation`` module for float ``(B, C, H, W)`` batches in [0, 1].

    Sub-policies are drawn per batch, ops fire and draw signs per sample (see the module notes).

    >>> import torch
    >>> from nas_aug.augment import Policy
    >>> augment = to_kornia(Policy.preset("autoaugment_cifar10"))
    >>> augment(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """
    return KorniaPolicy(policy)
