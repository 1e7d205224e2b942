"""Apply a :class:`~nas_aug.augment.policy.Policy` per sample: sample parameters, then apply them.

:func:`sample_params` draws all the randomness of one batch (which sub-policies each sample
runs, which of their ops fire, the sign of each signed op); :func:`apply_params` applies it
deterministically, so a batch can be replayed from its parameters. Unlike Kornia's
``RandAugment`` / ``AutoAugment``, which choose one sub-policy for the whole batch, every sample
draws its own, as the papers do. The application is vectorised: for each op slot, the samples
are grouped by the op they run and each group runs in one call, the geometric ops together as
one ``grid_sample``, the colour ops together as one blend and the whole-pixel ops (crop, flip,
Cutout) as one gather (see :mod:`nas_aug.augment._fused`), ``equalize`` alone.

>>> import torch
>>> from nas_aug.augment import RandAugment
>>> policy = RandAugment(num_ops=2, magnitude=0.5)
>>> images = torch.rand(4, 3, 16, 16)
>>> params = sample_params(policy, 4, torch.Generator().manual_seed(0))
>>> params.sub_policy.shape, params.apply.shape
(torch.Size([4, 2]), torch.Size([4, 2, 1]))
>>> torch.equal(apply_params(images, policy, params), apply_params(images, policy, params))
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..validation import check_int
from ._fused import BLEND, GEOMETRIC, PIXEL, blend, remap, warp
from .ops import OP_NAMES, OPS, get_op, parameters
from .policy import OpSpec, Policy

__all__ = ["IMAGE_TOLERANCE", "AugmentParams", "PolicyAugment", "apply_params", "check_images",
           "sample_params"]

# how far outside [0, 1] an image value may stray (rounding) before it counts as out of range
IMAGE_TOLERANCE = 1e-3
# the ops no fused kernel runs (equalize): each runs its own kernel
_ALONE = tuple(name for name in OP_NAMES if name not in (*GEOMETRIC, *BLEND, *PIXEL, "identity"))


@dataclass(frozen=True, eq=False)
class AugmentParams:
    """The randomness of one augmented batch, enough to replay it.

    With ``B`` samples, ``D`` draws per sample (plus one each for the policy's ``before`` and
    ``after`` ops, where it has them) and sub-policies of at most ``L`` ops: ``sub_policy``
    ``(B, D)`` holds the index of each drawn sub-policy (``before`` and ``after`` follow the
    sub-policies), ``apply`` ``(B, D, L)`` whether each op fired (``False`` past the end of a
    shorter sub-policy), ``sign`` ``(B, D, L)`` the ``+1`` / ``-1`` sign each signed op uses and
    ``position`` ``(B, D, L, 2)`` where in the image a crop or cutout lands (zeros for a policy
    without either, whose random stream it leaves alone). Tensors live on the CPU.

    >>> import torch
    >>> from nas_aug.augment import Policy
    >>> params = sample_params(Policy.preset("autoaugment_svhn"), 3, torch.Generator())
    >>> params.batch_size, params.sign.shape
    (3, torch.Size([3, 1, 2]))
    """

    sub_policy: Tensor
    apply: Tensor
    sign: Tensor
    position: Tensor

    @property
    def batch_size(self) -> int:
        return self.sub_policy.shape[0]

    def to_json(self) -> dict[str, Any]:
        """Plain lists, e.g. to log which ops each sample received."""
        return {"sub_policy": self.sub_policy.tolist(), "apply": self.apply.tolist(),
                "sign": self.sign.tolist(), "position": self.position.tolist()}


def _rows(policy: Policy) -> tuple[tuple[OpSpec, ...], ...]:
    """The sub-policies, then ``before`` and ``after`` where the policy has them."""
    return policy.sub_policies + tuple(ops for ops in (policy.before, policy.after) if ops)


def _draws(policy: Policy) -> int:
    """Sub-policies each sample runs: its draws and the fixed ``before`` and ``after``."""
    return policy.draws_per_sample + bool(policy.before) + bool(policy.after)


@functools.lru_cache(maxsize=32)
def _tables(policy: Policy) -> tuple[Tensor, Tensor, Tensor]:
    """Per (row of :func:`_rows`, slot): op index (-1 past the end), magnitude, probability."""
    rows = _rows(policy)
    shape = (len(rows), policy.max_ops)
    ops = torch.full(shape, -1, dtype=torch.long)
    magnitude = torch.zeros(shape)
    probability = torch.zeros(shape)
    for i, sub in enumerate(rows):
        for j, spec in enumerate(sub):
            ops[i, j] = OP_NAMES.index(spec.name)
            magnitude[i, j] = spec.magnitude
            probability[i, j] = spec.probability
    return ops, magnitude, probability


def _check_policy(policy: Any) -> Policy:
    if not isinstance(policy, Policy):
        raise ValueError(f"expected a Policy (Policy.preset(...), RandAugment(...), "
                         f"Policy([...])), got {type(policy).__name__}: {policy!r}")
    return policy


def sample_params(policy: Policy, batch_size: int,
                  generator: torch.Generator | None = None) -> AugmentParams:
    """Draw the randomness of one batch: sub-policies, which ops fire, and signs, per sample.

    Each sample draws ``policy.draws_per_sample`` sub-policies uniformly with replacement
    (between the fixed ``before`` and ``after``); each of their ops fires with its probability;
    each op gets a random sign and, in a policy with crop or cutout, a random position.
    """
    policy = _check_policy(policy)
    check_int("batch_size", batch_size, 0)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"sample_params draws on the CPU; got a generator on {generator.device}")
    _, _, probability = _tables(policy)
    count, draws, slots = len(policy.sub_policies), _draws(policy), policy.max_ops
    sub_policy = torch.randint(count, (batch_size, policy.draws_per_sample), generator=generator)
    fixed = torch.arange(count, len(_rows(policy))).expand(batch_size, -1)
    if policy.before:
        sub_policy = torch.cat([fixed[:, :1], sub_policy], dim=1)
    if policy.after:
        sub_policy = torch.cat([sub_policy, fixed[:, -1:]], dim=1)
    fires = torch.rand((batch_size, draws, slots), generator=generator) < probability[sub_policy]
    sign = torch.randint(0, 2, (batch_size, draws, slots), generator=generator) * 2.0 - 1.0
    shape = (batch_size, draws, slots, 2)
    position = torch.rand(shape, generator=generator) if _positional(policy) else \
        torch.zeros(shape)
    return AugmentParams(sub_policy, fires, sign, position)


@functools.lru_cache(maxsize=32)
def _positional(policy: Policy) -> bool:
    return any(OPS[name].positional for name in policy.op_names)


def check_images(images: Any, policy: Policy | None = None) -> None:
    """Raise ``ValueError`` unless ``images`` is a float ``(B, C, H, W)`` batch in ``[0, 1]``.

    With a policy, also check that every op it names supports the images' shape (``color``
    needs 1 or 3 channels).

    >>> import torch
    >>> check_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    Traceback (most recent call last):
    ...
    ValueError: images must be floating point with values in [0, 1], got dtype torch.uint8; ...
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, C, H, W), "
                         f"got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got shape {tuple(images.shape)} "
                         f"({images.ndim}-D)")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point with values in [0, 1], got dtype "
                         f"{images.dtype}; convert 8-bit images with images.float() / 255")
    if min(images.shape[1:]) < 1:
        raise ValueError(f"images must have channels and pixels, got shape {tuple(images.shape)}")
    if images.numel():
        low, high = (value.item() for value in torch.aminmax(images.detach()))
        if not (low >= -IMAGE_TOLERANCE and high <= 1 + IMAGE_TOLERANCE):
            raise ValueError(f"image values must lie in [0, 1], found values in [{low:g}, {high:g}]"
                             "; augment before normalising (and divide 8-bit data by 255)")
    if policy is not None:
        for name in _op_names(policy):
            try:
                get_op(name).check_images(images)
            except ValueError as error:
                raise ValueError(f"policy {policy.name!r}: {error}") from None
        _check_whole_pixels(images, policy)


@functools.lru_cache(maxsize=32)
def _op_names(policy: Policy) -> tuple[str, ...]:
    return policy.op_names


@functools.lru_cache(maxsize=32)
def _whole_pixel_specs(policy: Policy) -> tuple[tuple[OpSpec, float], ...]:
    """The policy's crops and cutouts that do something, with their fraction of the side."""
    specs = []
    for spec in policy.specs:
        op = OPS[spec.name]
        if op.positional and spec.magnitude > 0:
            low, high = op.value_range
            specs.append((spec, low + (high - low) * spec.magnitude))
    return tuple(specs)


def _check_whole_pixels(images: Tensor, policy: Policy) -> None:
    """Refuse a crop or cutout that rounds to no pixel on these images: it would do nothing."""
    side = min(images.shape[-2:])
    for spec, fraction in _whole_pixel_specs(policy):
        op = OPS[spec.name]
        if round(fraction * side) == 0:
            raise ValueError(
                f"policy {policy.name!r}: op {spec.name!r} at magnitude {spec.magnitude:g} "
                f"({op.unit} {fraction:g}) is {fraction * side:.2g} pixels on "
                f"{images.shape[-2]} x {images.shape[-1]} images and rounds to none; it "
                f"needs images of at least {math.ceil(0.5 / fraction)} pixels a side, or a "
                f"larger magnitude")


def _check_params(params: Any, policy: Policy, batch_size: int) -> AugmentParams:
    if not isinstance(params, AugmentParams):
        raise ValueError(f"params must be AugmentParams from sample_params, "
                         f"got {type(params).__name__}")
    expected = (batch_size, _draws(policy), policy.max_ops)
    if (tuple(params.apply.shape) != expected or tuple(params.sign.shape) != expected
            or tuple(params.sub_policy.shape) != expected[:2]
            or tuple(params.position.shape) != (*expected, 2)):
        raise ValueError(f"params were sampled for another batch or policy: apply has shape "
                         f"{tuple(params.apply.shape)}, expected {expected} (batch size, draws "
                         f"per sample with before and after, longest sub-policy of policy "
                         f"{policy.name!r})")
    count = len(_rows(policy))
    if params.sub_policy.numel() and not 0 <= int(params.sub_policy.min()) <= \
            int(params.sub_policy.max()) < count:
        raise ValueError(f"params name sub-policies up to {int(params.sub_policy.max())}, but "
                         f"policy {policy.name!r} has {count}")
    return params


def apply_params(images: Tensor, policy: Policy, params: AugmentParams) -> Tensor:
    """Augment ``images`` with the given parameters; the same parameters give the same output.

    ``images`` is a float ``(B, C, H, W)`` batch in ``[0, 1]`` (any device); the result has the
    same shape, dtype and device, with values in ``[0, 1]``.
    """
    policy = _check_policy(policy)
    check_images(images, policy)
    return _apply(images, policy, _check_params(params, policy, images.shape[0]))


_Kernel = Callable[[Tensor, Tensor, Sequence[int], Tensor], Tensor]


def _alone(name: str) -> _Kernel:
    kernel = OPS[name].kernel
    return lambda images, value, counts, position: kernel(images, value)


def _without_position(kernel: Callable[[Tensor, Tensor, Sequence[int]], Tensor]) -> _Kernel:
    return lambda images, value, counts, position: kernel(images, value, counts)


# a step (one op slot of one draw) calls each kernel once, on the samples that run one of its
# ops, sorted by op in the kernel's order
_KERNELS = ((_without_position(warp), GEOMETRIC), (_without_position(blend), BLEND),
            (remap, PIXEL), *((_alone(name), (name,)) for name in _ALONE))
_ORDER = tuple(name for _, names in _KERNELS for name in names)
# op index + 1 (0: no op) -> the op's place in _ORDER; identity sorts last, with the samples
# that run no op
_RANK = torch.tensor([len(_ORDER)] + [_ORDER.index(name) if name in _ORDER else len(_ORDER)
                                      for name in OP_NAMES])
_COLOR = OP_NAMES.index("color")


def _apply(images: Tensor, policy: Policy, params: AugmentParams) -> Tensor:
    ops, magnitudes, _ = _tables(policy)
    batch, steps = images.shape[0], _draws(policy) * policy.max_ops
    # (steps, batch): which op each sample runs at each step (-1: none), and its parameter
    sub_policy = params.sub_policy.cpu()
    op = torch.where(params.apply.cpu(), ops[sub_policy], -1).reshape(batch, steps).T
    magnitude = magnitudes[sub_policy].reshape(batch, steps).T
    sign = params.sign.cpu().reshape(batch, steps).T
    position = params.position.cpu().reshape(batch, steps, 2).transpose(0, 1)
    value = parameters(op, magnitude, sign)
    rank = _RANK[op + 1]
    if images.shape[1] == 1:
        rank[op == _COLOR] = len(_ORDER)  # grey images have no saturation to change
    # each step's samples sorted by rank: the samples of one kernel are a slice of `rows`
    rows = rank.argsort(dim=1, stable=True)
    counts = torch.zeros(steps, len(_ORDER) + 1, dtype=torch.long).scatter_add_(
        1, rank, torch.ones_like(rank)).tolist()
    value = value.gather(1, rows).to(images.device)
    position = position.gather(1, rows[:, :, None].expand(-1, -1, 2)).to(images.device)
    rows = rows.to(images.device)
    out = images.clamp(0.0, 1.0)  # a new tensor, written in place below
    for step in range(steps):
        start = first = 0
        for kernel, names in _KERNELS:
            op_counts = counts[step][first:first + len(names)]
            first, stop = first + len(names), start + sum(op_counts)
            if stop > start:
                chosen = rows[step, start:stop]
                out.index_copy_(0, chosen, kernel(out.index_select(0, chosen),
                                                  value[step, start:stop], op_counts,
                                                  position[step, start:stop]))
            start = stop
    return out


class PolicyAugment(nn.Module):
    """Augment a batch with a policy, each sample drawing its own ops; seeded and replayable.

    ``forward(images)`` samples parameters with the module's own ``torch.Generator`` (seeded by
    ``seed``; a random seed when ``None``), keeps them in ``last_params`` and applies them;
    ``forward(images, params)`` replays given parameters. The generator state travels in
    ``state_dict()``, so a restored module continues the same random stream. The module
    augments in train and eval mode alike: its caller decides when to use it.

    >>> import torch
    >>> from nas_aug.augment import RandAugment
    >>> augment = PolicyAugment(RandAugment(num_ops=2, magnitude=0.5), seed=0)
    >>> images = torch.rand(8, 3, 32, 32)
    >>> out = augment(images)
    >>> out.shape, out.dtype
    (torch.Size([8, 3, 32, 32]), torch.float32)
    >>> torch.equal(augment(images, augment.last_params), out)
    True
    """

    def __init__(self, policy: Policy, seed: int | None = None) -> None:
        super().__init__()
        self.policy = _check_policy(policy)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.last_params: AugmentParams | None = None

    def sample_params(self, batch_size: int) -> AugmentParams:
        return sample_params(self.policy, batch_size, self.generator)

    def forward(self, images: Tensor, params: AugmentParams | None = None) -> Tensor:
        check_images(images, self.policy)
        if params is None:
            params = self.sample_params(images.shape[0])
        params = _check_params(params, self.policy, images.shape[0])
        self.last_params = params
        return _apply(images, self.policy, params)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator_state"])

    def extra_repr(self) -> str:
        return (f"policy={self.policy.name!r}, sub_policies={len(self.policy.sub_policies)}, "
                f"draws_per_sample={self.policy.draws_per_sample}")
