"""Policy search methods: interchangeable objects that the ``AugmentSearch`` callback drives.

A method augments the training batches (:meth:`augment`), takes one outer step per training step
with the user's own loss on training and held-out batches (:meth:`outer_step`), may narrow its
choices at the end of an epoch (:meth:`end_epoch`), and names the policy it found
(:meth:`best_policy`). All of its state is in ``state_dict()``.

* :class:`DadaSearch`: DADA's differentiable search; the policy follows the hypergradient of the
  held-out loss through one virtual training step (see :mod:`nas_aug.bilevel`).
* :class:`RandAugmentSearch`: RandAugment's ``(N, M)`` and fixed presets (no augmentation,
  TrivialAugment) by successive halving in one fit. Every sample is augmented with a candidate
  drawn from those still in the race; every few steps, candidates are scored by the held-out
  loss decrease that one SGD step on a batch augmented with them predicts to first order,
  ``lr * <grad L_val, grad L_train(candidate)>``; at evenly spaced epochs the worse half is
  dropped. With the presets in the race, the search can always fall back to a fixed default.

>>> method = RandAugmentSearch(num_ops=(1, 2), magnitudes=(0.2, 0.6))
>>> [c for c in method.candidates]
[(1, 0.2), (1, 0.6), (2, 0.2), (2, 0.6), 'none', 'trivialaugment']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..bilevel import OuterOptimizer, OuterStep, gradients, unrolled_hypergradient
from ..registry import Registry
from ..validation import check_int, check_positive
from .apply import apply_params, sample_params
from .differentiable import DifferentiablePolicy
from .ops import AUTOAUGMENT_OPS
from .policy import PRESETS, Policy, RandAugment

__all__ = ["METHODS", "DadaSearch", "PolicySearch", "RandAugmentSearch"]

METHODS: Registry[type[PolicySearch]] = Registry("augmentation search method")


class PolicySearch:
    """The base of policy search methods (see the module docstring for the hooks); ``name``
    is its registry name.

    >>> sorted((name, METHODS[name].name) for name in METHODS)
    [('dada', 'dada'), ('randaugment', 'randaugment')]
    """

    name = "policy search"

    def check_fit(self, max_epochs: int | None) -> None:
        """Refuse a fit this method cannot run in (``ValueError`` saying why)."""

    def setup(self, device: torch.device) -> None:
        """Move the method's own tensors to the fit's device."""

    def augment(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def outer_step(self, step: OuterStep) -> None:
        raise NotImplementedError

    def end_epoch(self, epoch: int, max_epochs: int) -> None:
        """A training epoch (0-based) ends."""

    def best_policy(self) -> Policy:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {"method": self.name}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``."""


@METHODS.register("dada")
class DadaSearch(PolicySearch):
    """DADA (Li et al. 2020): a :class:`DifferentiablePolicy` trained by Adam on the unrolled
    held-out hypergradient every ``update_every`` steps; exports its ``top_k`` sub-policies.

    Args:
        ops: the ops whose ordered pairs are the sub-policies.
        temperature: the relaxation's temperature (Gumbel-softmax and relaxed Bernoulli).
        lr: Adam's learning rate on the policy's parameters.
        update_every: training steps between outer steps.
        top_k: sub-policies in the exported policy.
        seed: seeds the policy's draws.

    Raises:
        ValueError: an unknown op or a value out of range, named with what is accepted.

    >>> method = DadaSearch(ops=("rotate", "invert"), seed=0)
    >>> method.policy.num_sub_policies, method.best_policy().name
    (4, 'dada')
    """

    name = "dada"

    def __init__(self, ops: Sequence[str] = AUTOAUGMENT_OPS, temperature: float = 0.5,
                 lr: float = 0.005, update_every: int = 1, top_k: int = 25, seed: int = 0):
        self.lr = check_positive("lr", lr)
        self.policy = DifferentiablePolicy(tuple(ops), temperature=temperature, seed=seed)
        self.update_every = check_int("update_every", update_every, 1)
        self.top_k = check_int("top_k", top_k, 1)
        self.optimizer = OuterOptimizer(self.policy, self.lr)
        self.updates = 0

    def setup(self, device: torch.device) -> None:
        self.optimizer.to(device)

    @torch.no_grad()
    def augment(self, images: Tensor) -> Tensor:
        return self.policy(images, self.policy.sample_noise(images.shape[0]))

    def outer_step(self, step: OuterStep) -> None:
        if step.step % self.update_every:
            return
        noise = self.policy.sample_noise(step.images.shape[0])
        outer = list(self.policy.parameters())
        grads = unrolled_hypergradient(lambda: step.train_loss(self.policy(step.images, noise)),
                                       step.heldout_loss, step.weights, outer, step.lr)
        self.optimizer.step(grads if step.reduce is None else [step.reduce(g) for g in grads])
        self.policy.project_()
        self.updates += 1

    def best_policy(self) -> Policy:
        return self.policy.to_policy(self.top_k)

    def metrics(self) -> dict[str, float]:
        probability = torch.sigmoid(self.policy.probability_logits.detach())
        return {"entropy": self.policy.entropy(),
                "max_weight": float(self.policy.sub_policy_probabilities().max()),
                "mean_probability": float(probability.mean()),
                "mean_magnitude": float(self.policy.magnitudes.detach().mean())}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "updates": self.updates, **self.metrics(),
                "top_sub_policies": self.policy.summary()}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]


@METHODS.register("randaugment")
class RandAugmentSearch(PolicySearch):
    """RandAugment's ``num_ops`` x ``magnitudes`` grid, and the fixed ``presets`` beside it
    (names of :meth:`Policy.presets`), searched by successive halving in one fit (see the
    module docstring); every ``probe_every`` steps, ``probes_per_step`` candidates (in turn)
    are scored against one held-out gradient. A candidate is ``(N, M)`` or a preset's name.

    >>> method = RandAugmentSearch(num_ops=(1, 2), magnitudes=(0.3,), presets=())
    >>> method.best_policy().draws_per_sample  # before any probe: the first candidate
    1
    """

    name = "randaugment"

    def __init__(self, num_ops: Sequence[int] = (1, 2, 3),
                 magnitudes: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 presets: Sequence[str] = ("none", "trivialaugment"),
                 probe_every: int = 2, probes_per_step: int = 2, seed: int = 0):
        if isinstance(num_ops, (str, int)) or not num_ops:
            raise ValueError(f"num_ops must be a non-empty list of integers, got {num_ops!r}")
        if isinstance(magnitudes, (str, float, int)) or not magnitudes:
            raise ValueError(f"magnitudes must be a non-empty list of numbers in [0, 1], "
                             f"got {magnitudes!r}")
        if isinstance(presets, str) or len(set(presets)) != len(presets):
            raise ValueError(f"presets must be a list of distinct preset names (of "
                             f"{list(PRESETS)}), got {presets!r}")
        grid = [RandAugment(n, m) for n in num_ops for m in magnitudes]  # validates
        self.policies = grid + [Policy.preset(name) for name in presets]  # unknown: named
        self.candidates = [(p.draws_per_sample, p.sub_policies[0][0].magnitude)
                           for p in grid] + list(presets)
        self.probe_every = check_int("probe_every", probe_every, 1)
        self.probes_per_step = check_int("probes_per_step", probes_per_step, 1)
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
        self.survivors = list(range(len(self.policies)))
        self.halvings = 0
        self.cursor = 0
        self.score_sum = [0.0] * len(self.policies)
        self.score_count = [0] * len(self.policies)
        self.rungs: list[dict[str, Any]] = []

    def check_fit(self, max_epochs: int | None) -> None:
        if not (max_epochs or 0) > 0:
            raise ValueError(f"method='randaugment' spreads its halvings over the fit's epochs "
                             f"and needs Trainer(max_epochs=...), got {max_epochs!r}")

    @property
    def total_halvings(self) -> int:
        return math.ceil(math.log2(len(self.policies))) if len(self.policies) > 1 else 0

    def _augment_with(self, index: int, images: Tensor) -> Tensor:
        policy = self.policies[index]
        return apply_params(images, policy, sample_params(policy, images.shape[0],
                                                          self.generator))

    @torch.no_grad()
    def augment(self, images: Tensor) -> Tensor:
        pick = torch.randint(len(self.survivors), (images.shape[0],), generator=self.generator)
        out = images.clone()
        for slot in pick.unique().tolist():
            rows = (pick == slot).nonzero().squeeze(1).to(images.device)
            out[rows] = self._augment_with(self.survivors[slot], images[rows])
        return out

    def outer_step(self, step: OuterStep) -> None:
        if step.step % self.probe_every:
            return
        heldout = gradients(step.heldout_loss(), step.weights)
        for _ in range(min(self.probes_per_step, len(self.survivors))):
            index = self.survivors[self.cursor % len(self.survivors)]
            self.cursor += 1
            train = gradients(step.train_loss(self._augment_with(index, step.images)),
                              step.weights)
            dot = sum((h * t).sum() for h, t in zip(heldout, train))
            if step.reduce is not None:  # every process keeps the same scores
                dot = step.reduce(dot)
            self.score_sum[index] += step.lr * float(dot)
            self.score_count[index] += 1

    def mean_score(self, index: int) -> float:
        count = self.score_count[index]
        return self.score_sum[index] / count if count else -math.inf

    def _ranked(self) -> list[int]:
        return sorted(self.survivors, key=lambda i: -self.mean_score(i))  # stable: grid order

    def end_epoch(self, epoch: int, max_epochs: int) -> None:
        """Drop the worse half as often as the schedule asks by the end of epoch ``epoch``
        (0-based): halvings are spread evenly over ``max_epochs``, the last segment trains with
        the winner alone."""
        due = min(self.total_halvings, (epoch + 1) * (self.total_halvings + 1) // max_epochs)
        if self.halvings >= due or len(self.survivors) == 1:
            return
        unscored = [self.candidates[i] for i in self.survivors if not self.score_count[i]]
        if unscored:
            warnings.warn(f"RandAugmentSearch halves its candidates after epoch {epoch} but "
                          f"{unscored} were never scored and drop out; probe more often "
                          "(probe_every, probes_per_step) or train more steps per epoch",
                          stacklevel=2)
        ranked = self._ranked()
        self.rungs.append({"epoch": epoch, "scores": {
            str(self.candidates[i]): self.mean_score(i) if self.score_count[i] else None
            for i in ranked}})
        # several halvings fall due at once when there are fewer epochs than halvings
        keep = len(ranked)
        while self.halvings < due and keep > 1:
            keep, self.halvings = math.ceil(keep / 2), self.halvings + 1
        self.survivors = sorted(ranked[:keep])
        self.score_sum = [0.0] * len(self.policies)  # each rung is scored afresh
        self.score_count = [0] * len(self.policies)

    def best_policy(self) -> Policy:
        return self.policies[self._ranked()[0]]

    def metrics(self) -> dict[str, float]:
        """The survivors, and the leader's ``N`` and ``M`` (0 and 0 for a preset)."""
        best = self.candidates[self._ranked()[0]]
        num_ops, magnitude = best if isinstance(best, tuple) else (0, 0.0)
        return {"survivors": float(len(self.survivors)), "best_num_ops": float(num_ops),
                "best_magnitude": magnitude}

    def summary(self) -> dict[str, Any]:
        best = self.candidates[self._ranked()[0]]
        num_ops, magnitude, preset = (*best, None) if isinstance(best, tuple) else \
            (None, None, best)
        return {**super().summary(), "preset": preset, "num_ops": num_ops,
                "magnitude": magnitude, "survivors": [
                    list(c) if isinstance(c, tuple) else c
                    for c in (self.candidates[i] for i in self.survivors)],
                "rungs": self.rungs}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "survivors": list(self.survivors),
                "halvings": self.halvings, "cursor": self.cursor,
                "score_sum": list(self.score_sum), "score_count": list(self.score_count),
                "rungs": self.rungs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.survivors, self.halvings = list(state["survivors"]), state["halvings"]
        self.cursor, self.rungs = state["cursor"], state["rungs"]
        self.score_sum, self.score_count = list(state["score_sum"]), list(state["score_count"])


