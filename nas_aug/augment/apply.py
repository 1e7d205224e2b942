"""Apply a :class:`~nas_aug.augment.policy.Policy` per sample: sample parameters, then apply them.

:func:`sample_params` draws all the randomness of one batch (which sub-policies each sample
runs, which of their ops fire, the sign of each signed op); :func:`apply_params` applies it
deterministically, so a batch can be replayed from its parameters. Unlike Kornia's
``RandAugment`` / ``AutoAugment``, which choose one sub-policy for the whole batch, every sample
draws its own, as the papers do. The application is vectorised: for each op slot, the samples
are grouped by the op they run and each group runs in one call, the geometric ops together as
one affine warp and the pointwise colour ops together as one blend (see
:mod:`nas_aug.augment._fused`), every other op alone.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..validation import check_int
from ._fused import BLEND, GEOMETRIC, blend, warp
from .ops import OP_NAMES, OPS, get_op
from .policy import Policy

__all__ = ["IMAGE_TOLERANCE", "AugmentParams", "PolicyAugment", "apply_params", "check_images",
           "sample_params"]

# how far outside [0, 1] an image value may stray (rounding) before it counts as out of range
IMAGE_TOLERANCE = 1e-3
# the ops no fused kernel runs (auto_contrast, equalize, sharpness): each runs its own kernel
_ALONE = tuple(name for name in OP_NAMES if name not in (*GEOMETRIC, *BLEND, "identity"))


@dataclass(frozen=True, eq=False)
class AugmentParams:
    """The randomness of one augmented batch, enough to replay it.

    With ``B`` samples, ``D`` draws per sample and sub-policies of at most ``L`` ops:
    ``sub_policy`` ``(B, D)`` holds the index of each drawn sub-policy, ``apply`` ``(B, D, L)``
    whether each op fired (``False`` past the end of a shorter sub-policy) and ``sign``
    ``(B, D, L)`` the ``+1`` / ``-1`` sign each signed op uses. Tensors live on the CPU.

    >>> import torch
    >>> from nas_aug.augment import Policy
    >>> params = sample_params(Policy.preset("autoaugment_svhn"), 3, torch.Generator())
    >>> params.batch_size, params.sign.shape
    (3, torch.Size([3, 1, 2]))
    """

    sub_policy: Tensor
    apply: Tensor
    sign: Tensor

    @property
    def batch_size(self) -> int:
        return self.sub_policy.shape[0]

    def to_json(self) -> dict[str, Any]:
        """Plain lists, e.g. to log which ops each sample received."""
        return {"sub_policy": self.sub_policy.tolist(), "apply": self.apply.tolist(),
                "sign": self.sign.tolist()}


@functools.lru_cache(maxsize=32)
def _tables(policy: Policy) -> tuple[Tensor, Tensor, Tensor]:
    """Per (sub-policy, slot): op index (-1 past the end), magnitude and probability."""
    shape = (len(policy.sub_policies), policy.max_ops)
    ops = torch.full(shape, -1, dtype=torch.long)
    magnitude = torch.zeros(shape)
    probability = torch.zeros(shape)
    for i, sub in enumerate(policy.sub_policies):
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

    Each sample draws ``policy.draws_per_sample`` sub-policies uniformly with replacement; each
    of their ops fires with its probability; each op gets a random sign.
    """
    policy = _check_policy(policy)
    check_int("batch_size", batch_size, 0)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"sample_params draws on the CPU; got a generator on {generator.device}")
    _, _, probability = _tables(policy)
    draws, slots = policy.draws_per_sample, policy.max_ops
    sub_policy = torch.randint(len(policy.sub_policies), (batch_size, draws), generator=generator)
    fires = torch.rand((batch_size, draws, slots), generator=generator) < probability[sub_policy]
    sign = torch.randint(0, 2, (batch_size, draws, slots), generator=generator) * 2.0 - 1.0
    return AugmentParams(sub_policy, fires, sign)


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
        for name in policy.op_names:
            try:
                get_op(name).check_images(images)
            except ValueError as error:
                raise ValueError(f"policy {policy.name!r}: {error}") from None


def _check_params(params: Any, policy: Policy, batch_size: int) -> AugmentParams:
    if not isinstance(params, AugmentParams):
        raise ValueError(f"params must be AugmentParams from sample_params, "
                         f"got {type(params).__name__}")
    expected = (batch_size, policy.draws_per_sample, policy.max_ops)
    if (tuple(params.apply.shape) != expected or tuple(params.sign.shape) != expected
            or tuple(params.sub_policy.shape) != expected[:2]):
        raise ValueError(f"params were sampled for another batch or policy: apply has shape "
                         f"{tuple(params.apply.shape)}, expected {expected} (batch size, draws "
                         f"per sample, longest sub-policy of policy {policy.name!r})")
    count = len(policy.sub_policies)
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


def _alone(name: str) -> Callable[[Tensor, Tensor, Sequence[int]], Tensor]:
    kernel = OPS[name].kernel
    return lambda images, value, counts: kernel(images, value)


# a step (one op slot of one draw) calls each kernel once, on the samples that run one of its
# ops, sorted by op in the kernel's order
_KERNELS = ((warp, GEOMETRIC), (blend, BLEND), *((_alone(name), (name,)) for name in _ALONE))
_ORDER = tuple(name for _, names in _KERNELS for name in names)
# op index + 1 (0: no op) -> the op's place in _ORDER; identity sorts last, with the samples
# that run no op
_RANK = torch.tensor([len(_ORDER)] + [_ORDER.index(name) if name in _ORDER else len(_ORDER)
                                      for name in OP_NAMES])
_COLOR = OP_NAMES.index("color")


def _apply(images: Tensor, policy: Policy, params: AugmentParams) -> Tensor:
    ops, magnitudes, _ = _tables(policy)
    batch, steps = images.shape[0], policy.draws_per_sample * policy.max_ops
    # (steps, batch): which op each sample runs at each step (-1: none), and its parameter
    sub_policy = params.sub_policy.cpu()
    op = torch.where(params.apply.cpu(), ops[sub_policy], -1).reshape(batch, steps).T
    magnitude = magnitudes[sub_policy].reshape(batch, steps).T
    sign = params.sign.cpu().reshape(batch, steps).T
    value = torch.zeros_like(magnitude)
    for index in op.unique().tolist():
        if index >= 0 and OPS[OP_NAMES[index]].has_magnitude:
            chosen = op == index
            value[chosen] = OPS[OP_NAMES[index]].parameter(magnitude[chosen], sign[chosen])
    rank = _RANK[op + 1]
    if images.shape[1] == 1:
        rank[op == _COLOR] = len(_ORDER)  # grey images have no saturation to change
    # each step's samples sorted by rank: the samples of one kernel are a slice of `rows`
    rows = rank.argsort(dim=1, stable=True)
    counts = torch.zeros(steps, len(_ORDER) + 1, dtype=torch.long).scatter_add_(
        1, rank, torch.ones_like(rank)).tolist()
    value = value.gather(1, rows).to(images.device)
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
                                                  value[step, start:stop], op_counts))
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
