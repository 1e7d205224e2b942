"""Policy search methods: interchangeable objects that the ``AugmentSearch`` callback drives.

A method augments the training batches (:meth:`augment`), takes one outer step per training step
with the user's own loss on training and held-out batches (:meth:`outer_step`), may narrow its
choices at the end of an epoch (:meth:`end_epoch`), and names the policy it found
(:meth:`best_policy`). All of its state is in ``state_dict()``.

* :class:`DadaSearch`: DADA's differentiable search, with one weight, probability and magnitude
  per op; the policy follows the hypergradient of the held-out loss after one virtual
  training step (see :mod:`nas_aug.bilevel`).
* :class:`RandAugmentSearch`: RandAugment's ``(N, M)`` (over all its ops or named subsets of
  them) and fixed presets (no augmentation, TrivialAugment, crop + flip) by successive halving
  in one fit. Every sample is augmented with a candidate drawn from those still in the race;
  every few steps, a few candidates (the least scored, in random pairings) are scored by how
  well the gradient of a batch augmented with them points down the held-out loss: the cosine
  of ``grad L_train(candidate)`` and ``grad L_val`` (``score="cosine"``, the default), or the
  held-out loss decrease one SGD step predicts to first order,
  ``lr * <grad L_val, grad L_train(candidate)>`` (``score="dot"``), which favours candidates
  whose training gradients are larger. Each score counts relative to the mean of the
  candidates scored against the same held-out batch, since how well any gradient aligns
  varies more from one held-out batch to the next than from one candidate to another. At
  evenly spaced epochs the worse half is dropped, and probes grow sparser as the race narrows;
  once one candidate is left, nothing is scored. With the presets in the race, the search can
  fall back to a fixed default.

>>> method = RandAugmentSearch(num_ops=(1, 2), magnitudes=(0.2, 0.6))
>>> [c for c in method.candidates]
[(1, 0.2), (1, 0.6), (2, 0.2), (2, 0.6), 'none', 'trivialaugment', 'crop_flip']
>>> RandAugmentSearch(num_ops=(1,), magnitudes=(0.5,), op_subsets=("all", "geometric"),
...                   presets=()).candidates
[(1, 0.5), (1, 0.5, 'geometric')]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..bilevel import (
    OuterOptimizer,
    OuterStep,
    gradients,
    lookahead_hypergradient,
    unrolled_hypergradient,
)
from ..registry import Registry
from ..validation import check_int, check_positive
from .apply import apply_params, sample_params
from .differentiable import DifferentiablePolicy
from .ops import AUTOAUGMENT_OPS, OP_SUBSETS, suggest
from .policy import PRESETS, Policy, RandAugment

__all__ = ["METHODS", "DadaSearch", "PolicySearch", "RandAugmentSearch"]

METHODS: Registry[type[PolicySearch]] = Registry("augmentation search method")
HYPERGRADIENTS = Registry("hypergradient")
HYPERGRADIENTS.add("unrolled", unrolled_hypergradient)  # through one virtual step: 4 passes
HYPERGRADIENTS.add("lookahead", lookahead_hypergradient)  # to first order in lr: 3 passes


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


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.sqrt(sum((t * t).sum() for t in tensors))


@METHODS.register("dada")
class DadaSearch(PolicySearch):
    """DADA (Li et al. 2020): a :class:`DifferentiablePolicy` trained by Adam on the held-out
    hypergradient every ``update_every`` steps, pulled back towards its initial values by
    ``prior_decay``; exports the distribution it trained with (or, with ``top_k``, DADA's most
    probable sub-policies) and keeps each op's weight, probability and magnitude after every
    epoch in ``history``.

    Args:
        ops: the ops whose ordered pairs are the sub-policies.
        temperature: the relaxation's temperature (Gumbel-softmax and relaxed Bernoulli).
        lr: Adam's learning rate on the policy's parameters.
        update_every: training steps between outer steps.
        hypergradient: ``"unrolled"`` (through one virtual training step, DARTS's second-order
            form: four forward-backward passes) or ``"lookahead"`` (the same to first order
            in the virtual step's learning rate, without taking it: three).
        prior_decay: after each Adam step every parameter moves ``lr * prior_decay`` of the way
            back to its initial value (uniform weights, probability and magnitude 0.5), as
            AdamW's decoupled weight decay does towards 0. With hypergradients this noisy, Adam
            alone walks the parameters at random (about ``lr`` per step in any direction); the
            decay bounds the walk (to about ``sqrt(lr / (2 prior_decay))``) while a consistent
            signal still moves a parameter up to ``1 / prior_decay``. ``0`` turns it off
            (``benchmarks/results/augment_dada_settings.md`` compares 0, 1 and 4).
        top_k: export DADA's ``top_k`` most probable sub-policies, drawn uniformly, instead of
            the fit's distribution (``None``).
        seed: seeds the policy's draws.

    Raises:
        ValueError: an unknown op or hypergradient, or a value out of range, named with what
            is accepted.

    >>> method = DadaSearch(ops=("rotate", "invert"), seed=0)
    >>> method.policy.num_sub_policies, method.best_policy().name
    (4, 'dada')
    """

    name = "dada"

    def __init__(self, ops: Sequence[str] = AUTOAUGMENT_OPS, temperature: float = 0.5,
                 lr: float = 0.05, update_every: int = 8, hypergradient: str = "lookahead",
                 prior_decay: float = 1.0, top_k: int | None = None, seed: int = 0):
        self.lr = check_positive("lr", lr)
        hint = f" with lr * prior_decay < 1 (the fraction of the way back per step; lr is {lr})"
        self.prior_decay = check_positive("prior_decay", prior_decay, allow_zero=True, hint=hint)
        if self.prior_decay * self.lr >= 1:
            raise ValueError(f"prior_decay must be a non-negative number{hint}, "
                             f"got {prior_decay!r}")
        self.hypergradient = hypergradient
        self._hypergradient = HYPERGRADIENTS.get(hypergradient)
        self.policy = DifferentiablePolicy(tuple(ops), temperature=temperature, seed=seed)
        self.update_every = check_int("update_every", update_every, 1)
        self.top_k = None if top_k is None else check_int("top_k", top_k, 1)
        self.optimizer = OuterOptimizer(self.policy, self.lr)
        self.updates = 0
        self.history: list[dict[str, Any]] = []  # the op table at the end of each epoch

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
        grads = self._hypergradient(lambda: step.train_loss(self.policy(step.images, noise)),
                                    step.heldout_loss, step.weights, outer, step.lr)
        self.optimizer.step(grads if step.reduce is None else [step.reduce(g) for g in grads])
        if self.prior_decay:
            self.policy.decay_toward_prior_(self.lr * self.prior_decay)
        self.policy.project_()
        self.updates += 1

    def best_policy(self) -> Policy:
        return self.policy.to_policy(top_k=self.top_k)

    def end_epoch(self, epoch: int, max_epochs: int) -> None:
        self.history.append({"epoch": epoch, "updates": self.updates,
                             **self.policy.op_table()})

    def metrics(self) -> dict[str, float]:
        return {"entropy": self.policy.entropy(),
                "max_op_weight": float(self.policy.op_weights().max()),
                "mean_probability": float(self.policy.op_probabilities().mean()),
                "mean_magnitude": float(self.policy.magnitudes.detach().mean())}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "updates": self.updates, **self.metrics(),
                "ops": list(self.policy.ops), **self.policy.op_table(),
                "top_sub_policies": self.policy.summary(), "history": self.history}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates, self.history = state["updates"], list(state["history"])


SCORES = ("cosine", "dot")


@METHODS.register("randaugment")
class RandAugmentSearch(PolicySearch):
    """RandAugment's ``op_subsets`` x ``num_ops`` x ``magnitudes`` grid, and the fixed
    ``presets`` beside it (names of :meth:`Policy.presets`), searched by successive halving in
    one fit (see the module docstring); every ``probe_every`` steps, ``probes_per_step``
    candidates are scored against one held-out gradient by ``score``. As the race narrows,
    probes grow sparser: with ``n`` of the ``c`` candidates left, one every
    ``probe_every * (c / n) ** probe_growth`` steps (rounded), so that at ``probe_growth=1``
    each survivor is scored about as often in every rung as in the first, and at 0 the
    interval stays ``probe_every``. A candidate is
    ``(N, M)`` (all of RandAugment's ops), ``(N, M, subset)`` (a subset of ``OP_SUBSETS``) or a
    preset's name.

    >>> method = RandAugmentSearch(num_ops=(1, 2), magnitudes=(0.3,), presets=())
    >>> method.best_policy().draws_per_sample  # before any probe: the first candidate
    1
    """

    name = "randaugment"

    def __init__(self, num_ops: Sequence[int] = (1, 2, 3),
                 magnitudes: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 presets: Sequence[str] = ("none", "trivialaugment", "crop_flip"),
                 op_subsets: Sequence[str] = ("all",), score: str = "cosine",
                 probe_every: int = 2, probes_per_step: int = 2, probe_growth: float = 1.0,
                 seed: int = 0):
        if isinstance(num_ops, (str, int)) or not num_ops:
            raise ValueError(f"num_ops must be a non-empty list of integers, got {num_ops!r}")
        if isinstance(magnitudes, (str, float, int)) or not magnitudes:
            raise ValueError(f"magnitudes must be a non-empty list of numbers in [0, 1], "
                             f"got {magnitudes!r}")
        for what, names, valid in (("presets", presets, PRESETS),
                                   ("op_subsets", op_subsets, OP_SUBSETS)):
            if isinstance(names, str) or len(set(names)) != len(names):
                raise ValueError(f"{what} must be a list of distinct names (of {list(valid)}), "
                                 f"got {names!r}")
        if not op_subsets:
            raise ValueError(f"op_subsets must name at least one of {list(OP_SUBSETS)}, got "
                             f"{op_subsets!r}")
        if score not in SCORES:
            hint = suggest(score, SCORES) if isinstance(score, str) else ""
            raise ValueError(f"unknown score {score!r}{hint}; scores are {list(SCORES)}")
        self.score = score
        grid = [(RandAugment(n, m, ops), (n, m) if ops == "all" else (n, m, ops))
                for ops in op_subsets for n in num_ops for m in magnitudes]  # validates
        self.policies = [policy for policy, _ in grid] + [Policy.preset(name)
                                                          for name in presets]  # unknown: named
        self.candidates = [candidate for _, candidate in grid] + list(presets)
        self.probe_every = check_int("probe_every", probe_every, 1)
        self.probes_per_step = check_int("probes_per_step", probes_per_step, 1)
        self.probe_growth = check_positive("probe_growth", probe_growth, allow_zero=True)
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
        self.pairing = torch.Generator().manual_seed(seed + 1)  # which candidates meet
        self.survivors = list(range(len(self.policies)))
        self.halvings = 0
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

    @property
    def probe_interval(self) -> int:
        """Steps from one probe to the next, for the survivors now in the race."""
        narrowed = len(self.policies) / len(self.survivors)
        return max(1, round(self.probe_every * narrowed ** self.probe_growth))

    def outer_step(self, step: OuterStep) -> None:
        if len(self.survivors) == 1 or step.step % self.probe_interval:
            return
        heldout = gradients(step.heldout_loss(), step.weights)
        scores = {}
        for index in self._probed():
            train = gradients(step.train_loss(self._augment_with(index, step.images)),
                              step.weights)
            dot = sum((h * t).sum() for h, t in zip(heldout, train))
            if self.score == "cosine":
                norms = _norm(heldout) * _norm(train)
                dot = dot / norms if norms > 0 else torch.zeros_like(dot)
            if step.reduce is not None:  # every process keeps the same scores
                dot = step.reduce(dot)
            scores[index] = float(dot) * (step.lr if self.score == "dot" else 1.0)
        mean = sum(scores.values()) / len(scores) if len(scores) > 1 else 0.0
        for index, score in scores.items():
            self.score_sum[index] += score - mean
            self.score_count[index] += 1

    def _probed(self) -> list[int]:
        """The ``probes_per_step`` least scored survivors, ties broken at random; in order."""
        ties = torch.rand(len(self.survivors), generator=self.pairing).tolist()
        order = sorted(range(len(self.survivors)),
                       key=lambda i: (self.score_count[self.survivors[i]], ties[i]))
        return sorted(self.survivors[i] for i in order[:self.probes_per_step])

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
        num_ops, magnitude = best[:2] if isinstance(best, tuple) else (0, 0.0)
        return {"survivors": float(len(self.survivors)), "best_num_ops": float(num_ops),
                "best_magnitude": magnitude}

    def summary(self) -> dict[str, Any]:
        best = self.candidates[self._ranked()[0]]
        if isinstance(best, tuple):
            (num_ops, magnitude, ops), preset = (best + ("all",))[:3], None
        else:
            num_ops, magnitude, ops, preset = None, None, None, best
        return {**super().summary(), "score": self.score, "preset": preset, "num_ops": num_ops,
                "magnitude": magnitude, "ops": ops, "survivors": [
                    list(c) if isinstance(c, tuple) else c
                    for c in (self.candidates[i] for i in self.survivors)],
                "rungs": self.rungs}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "survivors": list(self.survivors),
                "halvings": self.halvings, "pairing": self.pairing.get_state(),
                "score_sum": list(self.score_sum), "score_count": list(self.score_count),
                "rungs": self.rungs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.survivors, self.halvings = list(state["survivors"]), state["halvings"]
        self.pairing.set_state(state["pairing"])
        self.rungs = state["rungs"]
        self.score_sum, self.score_count = list(state["score_sum"]), list(state["score_count"])


