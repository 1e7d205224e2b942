"""A relaxed augmentation policy whose choices are learnable: DADA's search space, shared per op.

DADA (Li et al. 2020) makes the AutoAugment space differentiable: a sub-policy is an ordered
tuple of ops, each with a learnable application probability and magnitude. Here every op has
one weight, one probability and one magnitude, shared by every slot of every sub-policy it
appears in (DADA learns them per sub-policy: with 14 ops and pairs that is 196 weights and 392
probabilities and magnitudes, each of which sees about one sample of a batch in 200, and whose
gradients are too noisy to move them; shared, each sees every sample that draws its op). Per
sample and slot, an op is drawn by Gumbel-softmax over the op weights (hard, straight-through),
fires by a relaxed Bernoulli draw (hard, straight-through), and its magnitude reaches the loss
through the op itself where the op is differentiable in it (geometric and blending ops) and by
a straight-through estimator where it is not (``posterize``, ``solarize`` and the whole-pixel
``crop`` and ``cutout``).

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
>>> exported = policy.to_policy()  # the fit's distribution: 100 one-op sub-policies, 2 draws
>>> len(exported.sub_policies), exported.draws_per_sample, exported.sub_policies[0][0].probability
(100, 2, 0.5)
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
    """The randomness of one relaxed batch of ``B`` samples with ``L`` slots over ``n`` ops:
    Gumbel noise ``(B, L, n)`` for the op draws, logistic noise ``(B, L)`` for the application
    draws, ``(B, L)`` signs and ``(B, L, 2)`` positions for crop and cutout (zeros, and not
    drawn, where the ops have neither)."""

    gumbel: Tensor
    logistic: Tensor
    sign: Tensor
    position: Tensor


def _straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    return hard - soft.detach() + soft


class DifferentiablePolicy(nn.Module):
    """A relaxed policy of ``ops_per_sub_policy`` slots, each drawing one of ``ops``.

    Parameters, one entry per op: ``logits`` (the op weights: a slot draws op ``i`` with
    probability ``softmax(logits)[i]``), ``probability_logits`` (sigmoid gives the op's
    application probability) and ``magnitudes`` in ``[0, 1]`` (kept there by
    :meth:`project_`). ``forward(images, noise)`` is differentiable in all three;
    :meth:`to_policy` turns the distribution (or its ``top_k`` most probable op tuples) into a
    plain :class:`Policy`.

    >>> policy = DifferentiablePolicy(ops=("rotate", "brightness"))
    >>> [tuple(p.shape) for p in policy.parameters()]
    [(2,), (2,), (2,)]
    """

    def __init__(self, ops: tuple[str, ...] = AUTOAUGMENT_OPS, ops_per_sub_policy: int = 2,
                 temperature: float = 0.5, initial_probability: float = 0.5,
                 initial_magnitude: float = 0.5, seed: int | None = None):
        super().__init__()
        if isinstance(ops, str) or not ops:
            raise ValueError(f"ops must be a non-empty tuple of op names, got {ops!r}")
        self.ops = tuple(get_op(name).name for name in ops)
        self.ops_per_sub_policy = check_int("ops_per_sub_policy", ops_per_sub_policy, 1)
        if not (isinstance(initial_probability, float) and 0.0 < initial_probability < 1.0):
            raise ValueError(f"initial_probability must be a float in (0, 1) (a logit is "
                             f"learned), got {initial_probability!r}")
        if not (isinstance(initial_magnitude, float) and 0.0 <= initial_magnitude <= 1.0):
            raise ValueError(f"initial_magnitude must be a float in [0, 1], "
                             f"got {initial_magnitude!r}")
        self.temperature = check_positive("temperature", temperature)
        count = len(self.ops)
        self.logits = nn.Parameter(torch.zeros(count))
        self.probability_logits = nn.Parameter(
            torch.full((count,), math.log(initial_probability / (1 - initial_probability))))
        self.magnitudes = nn.Parameter(torch.full((count,), float(initial_magnitude)))
        self.initial_probability, self.initial_magnitude = initial_probability, initial_magnitude
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    @property
    def num_sub_policies(self) -> int:
        """The ordered op tuples a sample can draw."""
        return len(self.ops) ** self.ops_per_sub_policy

    def sample_noise(self, batch_size: int) -> PolicyNoise:
        """Draw one batch's randomness with the module's generator (on the CPU)."""
        shape = (batch_size, self.ops_per_sub_policy)
        uniform = torch.rand((*shape, len(self.ops)), generator=self.generator)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
        u = torch.rand(shape, generator=self.generator).clamp(1e-6, 1 - 1e-6)
        sign = torch.randint(0, 2, shape, generator=self.generator) * 2.0 - 1.0
        position = torch.rand((*shape, 2), generator=self.generator) \
            if any(get_op(name).positional for name in self.ops) else torch.zeros(*shape, 2)
        return PolicyNoise(gumbel, torch.log(u) - torch.log1p(-u), sign, position)

    def forward(self, images: Tensor, noise: PolicyNoise) -> Tensor:
        check_images(images)
        expected = (images.shape[0], self.ops_per_sub_policy, len(self.ops))
        if noise.gumbel.shape != expected:
            raise ValueError(f"noise was drawn for {noise.gumbel.shape[0]} samples, "
                             f"{noise.gumbel.shape[1]} slots and {noise.gumbel.shape[2]} ops; "
                             f"the batch has {images.shape[0]} samples and the policy "
                             f"{self.ops_per_sub_policy} slots of {len(self.ops)} ops")
        device = self.logits.device
        gumbel, logistic = noise.gumbel.to(device), noise.logistic.to(device)
        soft = torch.softmax((self.logits + gumbel) / self.temperature, dim=2)
        chosen = soft.argmax(dim=2)  # (B, L)
        weight = _straight_through(torch.ones_like(chosen, dtype=soft.dtype),
                                   soft.gather(2, chosen[..., None]).squeeze(2))
        out = images.clamp(0.0, 1.0)
        for slot in range(self.ops_per_sub_policy):
            op_index = chosen[:, slot]
            fire_soft = torch.sigmoid((self.probability_logits[op_index] + logistic[:, slot])
                                      / self.temperature)
            fires = _straight_through((fire_soft > 0.5).to(fire_soft.dtype), fire_soft)
            gate = weight[:, slot] * fires  # 1 in value; the op weight's and probability's path
            magnitude = self.magnitudes[op_index].clamp(0.0, 1.0)
            sign = noise.sign[:, slot].to(device)
            position = noise.position[:, slot].to(device)
            for index in op_index.unique().tolist():
                rows = (op_index == index).nonzero().squeeze(1)
                op = get_op(self.ops[index])
                before, strength = out[rows], magnitude[rows]
                after = op.apply(before, strength, sign[rows], position[rows])
                if op.has_magnitude and op.name in _STRAIGHT_THROUGH:
                    after = after.detach() + (strength - strength.detach())[:, None, None, None]
                out = out.index_copy(0, rows, before + gate[rows][:, None, None, None].to(
                    out.dtype) * (after - before))
        return out

    @torch.no_grad()
    def project_(self) -> None:
        """Clip the magnitudes back into ``[0, 1]`` after an optimizer step."""
        self.magnitudes.clamp_(0.0, 1.0)

    @torch.no_grad()
    def decay_toward_prior_(self, rate: float) -> None:
        """Move every parameter the fraction ``rate`` of the way back to its initial value
        (uniform op weights, the initial probability and magnitude)."""
        prior = math.log(self.initial_probability / (1 - self.initial_probability))
        self.logits.mul_(1 - rate)
        self.probability_logits.sub_(prior).mul_(1 - rate).add_(prior)
        self.magnitudes.sub_(self.initial_magnitude).mul_(1 - rate).add_(self.initial_magnitude)

    def op_weights(self) -> Tensor:
        """The probability that a slot draws each op."""
        return torch.softmax(self.logits.detach(), dim=0)

    def op_probabilities(self) -> Tensor:
        """Each op's probability of being applied once drawn."""
        return torch.sigmoid(self.probability_logits.detach())

    def entropy(self) -> float:
        """The entropy (nats) of the sub-policy distribution; ``log K`` when uniform."""
        p = self.op_weights()
        return self.ops_per_sub_policy * float(-(p * torch.log(p.clamp_min(1e-12))).sum())

    def _heaviest(self, top_k: int) -> list[tuple[float, tuple[int, ...]]]:
        """The ``top_k`` most probable op tuples with their probability, heaviest first (ties
        in the order of ``ops``)."""
        weights = self.op_weights().cpu().tolist()
        tuples = itertools.product(range(len(self.ops)), repeat=self.ops_per_sub_policy)
        ranked = sorted(((math.prod(weights[i] for i in t), t) for t in tuples),
                        key=lambda entry: -entry[0])
        return ranked[:top_k]

    def to_policy(self, top_k: int | None = None, name: str = "dada",
                  resolution: int = 100) -> Policy:
        """The policy as plain data, each op with its learned probability and magnitude
        (rounded to 4 decimals).

        By default, the distribution the fit trained with: ``ops_per_sub_policy`` draws per
        sample among single-op sub-policies, each op repeated in proportion to its weight
        (in shares of ``resolution`` by largest remainder, so that an op whose weight is under
        ``0.5 / resolution`` may drop out; as few sub-policies as give those shares). With
        ``top_k``, DADA's export: the ``top_k`` most probable op tuples, drawn uniformly.
        """
        probability = self.op_probabilities().cpu()
        magnitude = self.magnitudes.detach().clamp(0.0, 1.0).cpu()

        def spec(i: int) -> OpSpec:
            return OpSpec(self.ops[i], round(float(probability[i]), 4),
                          round(float(magnitude[i]), 4) if get_op(self.ops[i]).has_magnitude
                          else 0.0)

        if top_k is not None:
            check_int("top_k", top_k, 1)
            return Policy(tuple(tuple(spec(i) for i in t) for _, t in self._heaviest(top_k)),
                          name=name)
        check_int("resolution", resolution, 1)
        shares = (self.op_weights().cpu().double() * resolution).tolist()
        counts = [math.floor(share) for share in shares]
        by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
        for i in by_remainder[:resolution - sum(counts)]:
            counts[i] += 1
        common = math.gcd(*counts)  # the same shares in fewer sub-policies
        counts = [count // common for count in counts]
        return Policy(tuple((spec(i),) for i, count in enumerate(counts) for _ in range(count)),
                      name=name, draws_per_sample=self.ops_per_sub_policy)

    def summary(self, top_k: int = 10) -> list[dict[str, Any]]:
        """The ``top_k`` sub-policies with their probability of being drawn, as plain data."""
        policy = self.to_policy(top_k=top_k)
        return [{"weight": round(weight, 6), "ops": [op.to_json() for op in ops]}
                for (weight, _), ops in zip(self._heaviest(top_k), policy.sub_policies)]

    def op_table(self) -> dict[str, list[float]]:
        """Per op, in the order of ``ops``: weight, probability and magnitude, as plain data."""
        return {"weight": [round(float(v), 6) for v in self.op_weights()],
                "probability": [round(float(v), 6) for v in self.op_probabilities()],
                "magnitude": [round(float(v), 6) for v in
                              self.magnitudes.detach().clamp(0.0, 1.0)]}

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator_state"])

    def extra_repr(self) -> str:
        return (f"ops={len(self.ops)}, sub_policies={self.num_sub_policies}, "
                f"temperature={self.temperature}")
