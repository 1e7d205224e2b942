"""A relaxed augmentation policy whose choices are learnable: DADA's search space.

DADA (Li et al. 2020) makes the AutoAugment space differentiable: every ordered pair of ops is a
sub-policy with a learnable weight, and each of its ops has a learnable application probability
and magnitude. Per sample, a sub-policy is drawn by Gumbel-softmax (hard, straight-through), each
op fires by a relaxed Bernoulli draw (hard, straight-through), and magnitudes reach the loss
through the op itself where the op is differentiable in its magnitude (geometric and blending
ops) and by a straight-through estimator where it is not (``posterize``, ``solarize`` and the
whole-pixel ``crop`` and ``cutout``).

Randomness is drawn apart from its application (:meth:`DifferentiablePolicy.sample_noise`), so
one draw can be applied several times, as the finite-difference hypergradient needs.

>>> import torch
>>> policy = DifferentiablePolicy(ops=("rotate", "invert", "solarize"), seed=0)
>>> policy.num_sub_policies  # 3 x 3 ordered pairs
9
>>> images = torch.rand(4, 1, 8, 8)
>>> out = policy(images, policy.sample_noise(4))
>>> out.shape, out.requires_grad
(torch.Size([4, 1, 8, 8]), True)
>>> policy.to_policy(top_k=2).sub_policies[0][0].probability
0.5
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..validation import check_int, check_positive
from .apply import check_images
from .ops import AUTOAUGMENT_OPS, get_op
from .policy import OpSpec, Policy

__all__ = ["DifferentiablePolicy", "PolicyNoise"]

# ops whose output does not depend smoothly on the magnitude: straight-through there
_STRAIGHT_THROUGH = frozenset({"posterize", "solarize", "crop", "cutout"})


@dataclass(frozen=True, eq=False)
class PolicyNoise:
    """The randomness of one relaxed batch: Gumbel noise ``(B, K)`` over the ``K`` sub-policies,
    logistic noise ``(B, L)`` for the ``L`` application draws, ``(B, L)`` signs and ``(B, L, 2)``
    positions for crop and cutout (zeros, and not drawn, where the ops have neither)."""

    gumbel: Tensor
    logistic: Tensor
    sign: Tensor
    position: Tensor


def _straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    return hard - soft.detach() + soft


class DifferentiablePolicy(nn.Module):
    """DADA's relaxed policy over ordered ``ops_per_sub_policy``-tuples of ``ops``.

    Parameters: ``logits`` ``(K,)`` (sub-policy weights), ``probability_logits`` ``(K, L)``
    (sigmoid gives each op's probability) and ``magnitudes`` ``(K, L)`` in ``[0, 1]`` (kept
    there by :meth:`project_`). ``forward(images, noise)`` is differentiable in all three;
    :meth:`to_policy` turns the ``top_k`` heaviest sub-policies into a plain :class:`Policy`.

    >>> policy = DifferentiablePolicy(ops=("rotate", "brightness"))
    >>> [tuple(p.shape) for p in policy.parameters()]
    [(4,), (4, 2), (4, 2)]
    """

    def __init__(self, ops: tuple[str, ...] = AUTOAUGMENT_OPS, ops_per_sub_policy: int = 2,
                 temperature: float = 0.5, initial_probability: float = 0.5,
                 initial_magnitude: float = 0.5, seed: int | None = None):
        super().__init__()
        if isinstance(ops, str) or not ops:
            raise ValueError(f"ops must be a non-empty tuple of op names, got {ops!r}")
        self.ops = tuple(get_op(name).name for name in ops)
        length = check_int("ops_per_sub_policy", ops_per_sub_policy, 1)
        if not (isinstance(initial_probability, float) and 0.0 < initial_probability < 1.0):
            raise ValueError(f"initial_probability must be a float in (0, 1) (a logit is "
                             f"learned), got {initial_probability!r}")
        if not (isinstance(initial_magnitude, float) and 0.0 <= initial_magnitude <= 1.0):
            raise ValueError(f"initial_magnitude must be a float in [0, 1], "
                             f"got {initial_magnitude!r}")
        self.temperature = check_positive("temperature", temperature)
        tuples = list(itertools.product(range(len(self.ops)), repeat=length))
        self.register_buffer("sub_policy_ops", torch.tensor(tuples, dtype=torch.long))
        count = len(tuples)
        self.logits = nn.Parameter(torch.zeros(count))
        self.probability_logits = nn.Parameter(
            torch.full((count, length), math.log(initial_probability / (1 - initial_probability))))
        self.magnitudes = nn.Parameter(torch.full((count, length), float(initial_magnitude)))
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    @property
    def num_sub_policies(self) -> int:
        return self.sub_policy_ops.shape[0]

    @property
    def ops_per_sub_policy(self) -> int:
        return self.sub_policy_ops.shape[1]

    def sample_noise(self, batch_size: int) -> PolicyNoise:
        """Draw one batch's randomness with the module's generator (on the CPU)."""
        shape = (batch_size, self.ops_per_sub_policy)
        uniform = torch.rand((batch_size, self.num_sub_policies), generator=self.generator)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
        u = torch.rand(shape, generator=self.generator).clamp(1e-6, 1 - 1e-6)
        sign = torch.randint(0, 2, shape, generator=self.generator) * 2.0 - 1.0
        position = torch.rand((*shape, 2), generator=self.generator) \
            if any(get_op(name).positional for name in self.ops) else torch.zeros(*shape, 2)
        return PolicyNoise(gumbel, torch.log(u) - torch.log1p(-u), sign, position)

    def forward(self, images: Tensor, noise: PolicyNoise) -> Tensor:
        check_images(images)
        if noise.gumbel.shape != (images.shape[0], self.num_sub_policies):
            raise ValueError(f"noise was drawn for {noise.gumbel.shape[0]} samples and "
                             f"{noise.gumbel.shape[1]} sub-policies; the batch has "
                             f"{images.shape[0]} samples and the policy {self.num_sub_policies}")
        device = self.logits.device
        gumbel, logistic = noise.gumbel.to(device), noise.logistic.to(device)
        soft = torch.softmax((self.logits + gumbel) / self.temperature, dim=1)
        chosen = soft.argmax(dim=1)
        weight = _straight_through(torch.ones_like(chosen, dtype=soft.dtype),
                                   soft.gather(1, chosen[:, None]).squeeze(1))
        original = images.clamp(0.0, 1.0)
        out = original
        for slot in range(self.ops_per_sub_policy):
            op_index = self.sub_policy_ops[chosen, slot]
            fire_soft = torch.sigmoid((self.probability_logits[chosen, slot]
                                       + logistic[:, slot]) / self.temperature)
            fires = _straight_through((fire_soft > 0.5).to(fire_soft.dtype), fire_soft)
            magnitude = self.magnitudes[chosen, slot].clamp(0.0, 1.0)
            sign = noise.sign[:, slot].to(device)
            position = noise.position[:, slot].to(device)
            for index in op_index.unique().tolist():
                rows = (op_index == index).nonzero().squeeze(1)
                op = get_op(self.ops[index])
                before, strength = out[rows], magnitude[rows]
                after = op.apply(before, strength, sign[rows], position[rows])
                if op.has_magnitude and op.name in _STRAIGHT_THROUGH:
                    after = after.detach() + (strength - strength.detach())[:, None, None, None]
                gate = fires[rows][:, None, None, None].to(out.dtype)
                out = out.index_copy(0, rows, before + gate * (after - before))
        gate = weight[:, None, None, None].to(out.dtype)
        return original + gate * (out - original)

    @torch.no_grad()
    def project_(self) -> None:
        """Clip the magnitudes back into ``[0, 1]`` after an optimizer step."""
        self.magnitudes.clamp_(0.0, 1.0)

    def sub_policy_probabilities(self) -> Tensor:
        return torch.softmax(self.logits.detach(), dim=0)

    def entropy(self) -> float:
        """The entropy (nats) of the sub-policy distribution; ``log K`` when uniform."""
        p = self.sub_policy_probabilities()
        return float(-(p * torch.log(p.clamp_min(1e-12))).sum())

    def to_policy(self, top_k: int = 25, name: str = "dada") -> Policy:
        """The ``top_k`` most probable sub-policies with their learned probabilities and
        magnitudes (rounded to 4 decimals), drawn uniformly per sample, as DADA exports."""
        check_int("top_k", top_k, 1)
        order = torch.argsort(self.sub_policy_probabilities(), descending=True, stable=True)
        probability = torch.sigmoid(self.probability_logits.detach()).cpu()
        magnitude = self.magnitudes.detach().clamp(0.0, 1.0).cpu()
        subs = []
        for k in order[:top_k].tolist():
            subs.append(tuple(
                OpSpec(self.ops[i], round(float(probability[k, j]), 4),
                       round(float(magnitude[k, j]), 4) if get_op(self.ops[i]).has_magnitude
                       else 0.0)
                for j, i in enumerate(self.sub_policy_ops[k].tolist())))
        return Policy(tuple(subs), name=name)

    def summary(self, top_k: int = 10) -> list[dict[str, Any]]:
        """The ``top_k`` sub-policies with their probability of being drawn, as plain data."""
        weights = self.sub_policy_probabilities().cpu()
        policy = self.to_policy(top_k)
        order = torch.argsort(weights, descending=True, stable=True)[:top_k].tolist()
        return [{"weight": round(float(weights[k]), 6), "ops": [op.to_json() for op in ops]}
                for k, ops in zip(order, policy.sub_policies)]

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator_state"])

    def extra_repr(self) -> str:
        return (f"ops={len(self.ops)}, sub_policies={self.num_sub_policies}, "
                f"temperature={self.temperature}")
