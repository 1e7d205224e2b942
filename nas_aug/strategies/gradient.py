"""Gradient-based one-shot NAS (DARTS, GDAS, ProxylessNAS): the outer loop over ``alpha``.

The weights train under the mixed forward (:func:`nas_aug.space.set_mixing`) with the
:class:`Mixture` that :meth:`GradientNAS.train_mixing` gives: every candidate mixed by
``softmax(alpha)`` (DARTS), one hard Gumbel-softmax draw per label (GDAS), or one path drawn
from ``softmax(alpha)`` (ProxylessNAS). Between weight steps, :meth:`GradientNAS.outer_step`
moves ``alpha`` (its own Adam, never the user's optimizer) along the gradient of

    L_val(alpha) + beta_decay * sum_label KL(uniform || softmax(alpha)) + cost_weight * overshoot

where ``overshoot = relu(E[MACs] / budget - 1)`` (and the same for parameters) with the expected
cost exact under ``softmax(alpha)`` (:meth:`~nas_aug.constraints.CostTable.expected`); with
``cost_form="multiplicative"`` the cost enters as ProxylessNAS writes it instead,
``L_val * (log E[MACs] / log budget) ** cost_exponent``. ProxylessNAS's outer step samples two
candidates per label and a binary gate between them: the forward is one path, and the gradient
of the gate reaches both candidates' logits (the paper's two-path estimator).
First order by default: ``L_val`` at the current weights; ``order=2`` uses the held-out loss
after one virtual SGD step and DARTS's finite-difference Hessian-vector product
(:func:`~nas_aug.strategies.bilevel.unrolled_hypergradient`).

>>> from nas_aug.space import Space, ValueChoice
>>> nas = GradientNAS(Space([ValueChoice("k", [3, 5])]), method="gdas", temperature=(10, 0.1))
>>> nas.set_epoch(1, max_epochs=3)
>>> nas.temperature
5.05
>>> nas.set_epoch(2, max_epochs=3)
>>> nas.temperature
0.1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..space import Space
from ..validation import check_int, check_positive
from .bilevel import gradients, unrolled_hypergradient
from .differentiable import ArchitectureParameters

__all__ = ["GRADIENT_METHODS", "ArchitectureStep", "GradientNAS", "Mixture"]

GRADIENT_METHODS = ("darts", "gdas", "proxyless")
COST_FORMS = ("penalty", "multiplicative")


@dataclass(frozen=True)
class Mixture:
    """Mixing weights per label, and the candidates to compute even at weight zero
    (``support``; see :func:`nas_aug.space.set_mixing`)."""

    weights: dict[str, Tensor]
    support: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchitectureStep:
    """What :meth:`GradientNAS.outer_step` needs from the fit at one step.

    ``heldout_loss(mixture)`` / ``train_loss(mixture)``: the user's loss on this step's
    held-out / training batch with the supernet mixed by ``mixture``; ``weights`` the model's
    trainable weights; ``lr`` the virtual step's learning rate (second order only);
    ``expected_cost(probabilities)`` the differentiable expected ``(macs, params, latency)``
    (latency ``None`` where not measured); ``limits`` the budget's ``(macs, params,
    latency_ms)``, ``None`` where unbounded; ``reduce`` averages
    a gradient over the fit's processes (``None`` on one process).
    """

    heldout_loss: Callable[[Mixture], Tensor]
    train_loss: Callable[[Mixture], Tensor]
    weights: Sequence[Tensor]
    lr: float
    expected_cost: Callable[[Mapping[str, Tensor]], tuple[Tensor | None, ...]] | None = None
    limits: tuple[float | None, ...] = (None, None, None)
    reduce: Callable[[Tensor], Tensor] | None = None


class GradientNAS:
    """The architecture as outer variables: DARTS, GDAS or ProxylessNAS on ``space``.

    ``lr`` / ``weight_decay``: Adam on ``alpha`` (betas 0.5, 0.999 as DARTS; the learning rate
    is DARTS's 3e-4 scaled up for fits of hundreds, not tens of thousands, of steps); ``order``
    1 or 2; ``beta_decay``: the weight of beta-DARTS's regulariser, the collapse remedy (0
    turns it off; on digits, 0.1 held every distribution near uniform and 0.01 let them
    move); ``temperature``: GDAS's ``(start, end)``, annealed linearly over the epochs;
    ``cost_weight``: the weight of the budget overshoot penalty (``cost_form="penalty"``);
    ``cost_form="multiplicative"`` scales the held-out loss by
    ``(log E[cost] / log budget) ** cost_exponent`` instead.

    >>> from nas_aug.space import Space, ValueChoice
    >>> nas = GradientNAS(Space([ValueChoice("d", [1, 2, 3])]), method="darts")
    >>> {k: v.tolist() for k, v in nas.train_mixing().weights.items()}
    {'d': [0.3333333432674408, 0.3333333432674408, 0.3333333432674408]}
    """

    def __init__(self, space: Space, method: str = "darts", lr: float = 1e-2,
                 weight_decay: float = 1e-3, order: int = 1, beta_decay: float = 0.01,
                 temperature: tuple[float, float] = (10.0, 0.1), cost_weight: float = 1.0,
                 cost_form: str = "penalty", cost_exponent: float = 0.6, seed: int = 0):
        if method not in GRADIENT_METHODS:
            raise ValueError(f"unknown gradient method {method!r}; choose one of "
                             f"{list(GRADIENT_METHODS)}")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (first-order) or 2 (unrolled, DARTS's "
                             f"second order), got {order!r}")
        if cost_form not in COST_FORMS:
            raise ValueError(f"cost_form must be one of {list(COST_FORMS)}, got {cost_form!r}")
        if not (isinstance(temperature, (tuple, list)) and len(temperature) == 2):
            raise ValueError(f"temperature must be a (start, end) pair, got {temperature!r}")
        self.method, self.order = method, order
        self.lr = check_positive("lr", lr)
        self.weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        self.beta_decay = check_positive("beta_decay", beta_decay, allow_zero=True)
        self.cost_weight = check_positive("cost_weight", cost_weight, allow_zero=True)
        self.cost_form = cost_form
        self.cost_exponent = check_positive("cost_exponent", cost_exponent, allow_zero=True)
        self.temperatures = tuple(check_positive("temperature", t) for t in temperature)
        self.temperature = self.temperatures[0]
        self.alpha = ArchitectureParameters(space)
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
        self.optimizer = self._new_optimizer()
        self.updates = 0
        self.last_losses: dict[str, float] = {}

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.alpha.parameters(), lr=self.lr, betas=(0.5, 0.999),
                                weight_decay=self.weight_decay)

    def setup(self, device: torch.device) -> None:
        state = self.optimizer.state_dict()
        self.alpha.to(device)
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state)

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        """GDAS's temperature for ``epoch`` (0-based): linear from start to end."""
        start, end = self.temperatures
        fraction = epoch / (max_epochs - 1) if max_epochs > 1 else 1.0
        fraction = min(1.0, fraction)
        self.temperature = start * (1.0 - fraction) + end * fraction

    def _mixing(self, generator: torch.Generator, two_paths: bool = False) -> Mixture:
        if self.method == "darts":
            return Mixture(self.alpha.soft())
        if self.method == "gdas":
            return Mixture(self.alpha.gumbel(self.temperature, generator))
        weights, support = {}, {}
        for label, probabilities in self.alpha.soft().items():
            if not two_paths:  # a weight step: one path drawn from softmax(alpha)
                index = int(torch.multinomial(probabilities.detach().cpu(), 1,
                                              generator=generator))
                weights[label] = torch.zeros_like(probabilities).index_fill(0, torch.tensor(
                    [index], device=probabilities.device), 1.0).detach()
                continue
            # an architecture step: two candidates, and a binary gate between them whose
            # straight-through gradient reaches both logits (renormalised over the pair)
            pair = torch.multinomial(probabilities.detach().cpu(), min(2, len(probabilities)),
                                     generator=generator).to(probabilities.device)
            logits = self.alpha.logits[label][pair]
            pair_probabilities = torch.softmax(logits, -1)
            gate = int(torch.multinomial(pair_probabilities.detach().cpu(), 1,
                                         generator=generator))
            hard = torch.zeros_like(pair_probabilities)
            hard[gate] = 1.0
            gates = hard - pair_probabilities.detach() + pair_probabilities
            weights[label] = torch.zeros_like(probabilities).index_put((pair,), gates)
            support[label] = tuple(pair.tolist())
        return Mixture(weights, support)

    def train_mixing(self) -> Mixture:
        """The mixture for a weight step (no graph to ``alpha``)."""
        with torch.no_grad():
            return self._mixing(self.generator)

    def _expected_cost(self, step: ArchitectureStep) -> list[tuple[Tensor, float]]:
        """``(expected cost, limit)`` for each limited cost, differentiable in ``alpha``."""
        if step.expected_cost is None or not any(step.limits):
            return []
        expected = step.expected_cost(self.alpha.soft())
        self.last_losses["expected_macs"] = float(expected[0].detach())
        if len(expected) > 2 and expected[2] is not None:
            self.last_losses["expected_latency_ms"] = float(expected[2].detach())
        return [(value, limit) for value, limit in zip(expected, step.limits) if limit]

    def regulariser(self, step: ArchitectureStep) -> Tensor:
        """beta-decay plus, with ``cost_form="penalty"``, the budget overshoot penalty (both
        differentiable in ``alpha``)."""
        loss = self.beta_decay * self.alpha.beta_decay()
        self.last_losses["beta_decay"] = float(loss.detach())
        if self.cost_form == "penalty" and self.cost_weight:
            costs = self._expected_cost(step)
            if costs:
                overshoot = sum(torch.relu(value / limit - 1.0) for value, limit in costs)
                self.last_losses["overshoot"] = float(overshoot.detach())
                loss = loss + self.cost_weight * overshoot.to(loss.dtype)
        return loss

    def _cost_factor(self, step: ArchitectureStep) -> Tensor | None:
        """ProxylessNAS's ``(log E[cost] / log budget) ** cost_exponent``, or ``None``."""
        if self.cost_form != "multiplicative":
            return None
        costs = self._expected_cost(step)
        if not costs:
            return None
        factor = math.prod((torch.log(value) / math.log(limit)) ** self.cost_exponent
                           for value, limit in costs)
        self.last_losses["cost_factor"] = float(factor.detach())
        return factor.float()

    def outer_step(self, step: ArchitectureStep) -> None:
        """One Adam step on ``alpha`` from the held-out loss at this step."""
        params = list(self.alpha.parameters())
        state = self.generator.get_state()  # the same draw in every pass of this step

        def mixture() -> Mixture:
            return self._mixing(torch.Generator().set_state(state), two_paths=True)

        def heldout() -> Tensor:
            loss = step.heldout_loss(mixture())
            self.last_losses["heldout"] = float(loss.detach())
            return loss

        if self.order == 1:
            grads = gradients(heldout(), params)
        else:
            grads = unrolled_hypergradient(lambda: step.train_loss(mixture()), heldout,
                                           step.weights, params, step.lr)
        if step.reduce is not None:  # every process takes the same step
            grads = [step.reduce(grad) for grad in grads]
        if self.method != "darts":
            self._mixing(self.generator, two_paths=True)  # past this step's draw
        factor = self._cost_factor(step)
        if factor is not None:  # d(L f) = f dL + L df
            scale = gradients(factor, params)
            grads = [float(factor.detach()) * g + self.last_losses["heldout"] * d
                     for g, d in zip(grads, scale)]
        regular = gradients(self.regulariser(step), params)
        for parameter, grad, extra in zip(params, grads, regular):
            parameter.grad = grad + extra
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1

    def metrics(self) -> dict[str, float]:
        entropy = self.alpha.entropy()
        out = {f"entropy/{label}": value for label, value in entropy.items()}
        out["entropy_mean"] = sum(entropy.values()) / max(1, len(entropy))
        out["temperature"] = self.temperature
        out.update(self.last_losses)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "temperature": self.temperature,
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha.load_state_dict(state["alpha"])
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.temperature, self.updates = state["temperature"], state["updates"]
