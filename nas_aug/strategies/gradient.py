"""Gradient-based one-shot NAS (DARTS, GDAS, ProxylessNAS): the outer loop over ``alpha``.

The weights train under the mixed forward (:func:`nas_aug.supernet.set_mixing`) with the
:class:`Mixture` a strategy's :meth:`GradientStrategy.train_mixing` gives (each strategy
in its own file says how it mixes: :mod:`.darts`, :mod:`.gdas`, :mod:`.proxyless`). Between
weight steps, :meth:`GradientStrategy.architecture_step` moves ``alpha`` (its own Adam, never
the user's optimizer) along the gradient of

    L_val(alpha) + beta_decay * sum_label KL(uniform || softmax(alpha)) + cost_weight * overshoot

where ``overshoot = relu(E[MACs] / budget - 1)`` (and the same for parameters) with the expected
cost exact under ``softmax(alpha)`` (:meth:`~nas_aug.constraints.CostTable.expected`); with
``cost_form="multiplicative"`` the cost enters as ProxylessNAS writes it instead,
``L_val * (log E[MACs] / log budget) ** cost_exponent``.
First order by default: ``L_val`` at the current weights; ``order=2`` uses the held-out loss
after one virtual SGD step and DARTS's finite-difference Hessian-vector product
(:func:`~nas_aug.bilevel.unrolled_hypergradient`). When training ends, the most probable
architecture within the budget is derived and the ``top_k`` most probable are scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..bilevel import OuterOptimizer, OuterStep, gradients, unrolled_hypergradient
from ..result import SearchResult
from ..space import Sample, sample_key
from ..supernet import canonical_sample, mixed, set_mixing
from ..validation import check_int, check_positive
from .base import Scoring, SearchContext, Strategy
from .differentiable import ArchitectureParameters

__all__ = ["ArchitectureStep", "GradientStrategy", "Mixture"]

COST_FORMS = ("penalty", "multiplicative")


@dataclass(frozen=True)
class Mixture:
    """Mixing weights per label, and the candidates to compute even at weight zero
    (``support``; see :func:`nas_aug.supernet.set_mixing`)."""

    weights: dict[str, Tensor]
    support: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchitectureStep:
    """What :meth:`GradientStrategy.architecture_step` needs at one step.

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


class GradientStrategy(Strategy):
    """The architecture as outer variables ``alpha``; subclasses say how ``alpha`` mixes the
    supernet (:meth:`_mixing`).

    Args:
        lr: Adam's learning rate on ``alpha`` (betas 0.5, 0.999 as DARTS; DARTS's 3e-4 scaled
            up for fits of hundreds, not tens of thousands, of steps).
        weight_decay: Adam's weight decay on ``alpha``.
        order: 1 (first order) or 2 (the unrolled hypergradient, DARTS's second order).
        beta_decay: the weight of beta-DARTS's regulariser, the collapse remedy (0 turns it
            off; on digits, 0.1 held every distribution near uniform and 0.01 let them move).
        cost_weight: the weight of the budget overshoot penalty (``cost_form="penalty"``).
        cost_form: ``"penalty"`` or ``"multiplicative"`` (the held-out loss scaled by
            ``(log E[cost] / log budget) ** cost_exponent``, as ProxylessNAS).
        cost_exponent: the exponent of the multiplicative form.

    Raises:
        ValueError: a setting out of range, named with what is accepted.

    >>> from nas_aug.strategies import DARTS
    >>> DARTS(order=3)
    Traceback (most recent call last):
    ...
    ValueError: order must be 1 (first-order) or 2 (unrolled, DARTS's second order), got 3
    """

    has_outer_step = True
    family = "gradient"

    def __init__(self, lr: float = 1e-2, weight_decay: float = 1e-3, order: int = 1,
                 beta_decay: float = 0.01, cost_weight: float = 1.0, cost_form: str = "penalty",
                 cost_exponent: float = 0.6):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (first-order) or 2 (unrolled, DARTS's "
                             f"second order), got {order!r}")
        if cost_form not in COST_FORMS:
            raise ValueError(f"cost_form must be one of {list(COST_FORMS)}, got {cost_form!r}")
        self.order = order
        self.lr = check_positive("lr", lr)
        self.weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        self.beta_decay = check_positive("beta_decay", beta_decay, allow_zero=True)
        self.cost_weight = check_positive("cost_weight", cost_weight, allow_zero=True)
        self.cost_form = cost_form
        self.cost_exponent = check_positive("cost_exponent", cost_exponent, allow_zero=True)
        self._seed = 0
        self.updates = 0
        self.last_losses: dict[str, float] = {}

    # ---- how alpha mixes the supernet (one subclass per strategy) -------------------------
    def _mixing(self, generator: torch.Generator, two_paths: bool = False) -> Mixture:
        """The mixture of a weight step, or (``two_paths``) of an architecture step."""
        raise NotImplementedError

    # ---- hooks ----------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        self._seed = check_int("seed", seed, 0)

    def setup(self, context: SearchContext) -> None:
        super().setup(context)
        self.alpha = ArchitectureParameters(context.space)
        self.generator = torch.Generator().manual_seed(self._seed)
        self.optimizer = OuterOptimizer(self.alpha, self.lr, self.weight_decay)
        self.updates, self.last_losses = 0, {}

    def prepare(self, example: Tensor) -> None:
        """Fail now if a label cannot be mixed (the probe runs on a copy of the supernet)."""
        supernet, space = self.context.supernet, self.context.space
        set_mixing(supernet, self.train_mixing().weights, space, example_input=example)
        set_mixing(supernet, None)

    def to(self, device: torch.device) -> None:
        self.optimizer.to(device)

    def outer_step(self, step: OuterStep) -> None:
        """One step on ``alpha`` from the user's losses, the supernet mixed as it asks."""
        supernet, space = self.context.supernet, self.context.space
        table, budget = self.context.cost_table, self.context.budget

        def under(mixture: Mixture, loss: Callable[[], Tensor]) -> Tensor:
            with mixed(supernet, mixture.weights, space, support=mixture.support):
                return loss()

        self.architecture_step(ArchitectureStep(
            heldout_loss=lambda mixture: under(mixture, step.heldout_loss),
            train_loss=lambda mixture: under(mixture, step.train_loss),
            weights=step.weights, lr=step.lr,
            expected_cost=lambda p: (*table.expected(p), table.expected_latency(p)
                                     if table.has_latency else None),
            limits=(None, None, None) if budget is None else (budget.macs, budget.params,
                                                               budget.latency_ms),
            reduce=step.reduce))

    def train_paths(self) -> list[Sample]:
        mixture = self.train_mixing()
        set_mixing(self.context.supernet, mixture.weights, self.context.space,
                   support=mixture.support)
        return []

    def validation_sample(self) -> Sample:
        set_mixing(self.context.supernet, None)  # the architecture derived so far, plainly
        return self.alpha.argmax()

    def finish(self, scoring: Scoring) -> SearchResult:
        """The most probable architecture within the budget; the ``top_k`` most probable
        distinct networks (samples that differ only in labels without effect are one) are
        scored on the held-out data for the record."""
        context, alpha = self.context, self.alpha
        set_mixing(context.supernet, None)
        supernet, space = context.supernet, context.space
        ranked = alpha.top_k(scoring.top_k, context.feasible(),
                             key=lambda s: sample_key(canonical_sample(supernet, s, space)))
        if not ranked:
            raise RuntimeError(f"none of the most probable architectures is within "
                               f"{context.budget}; raise cost_weight (cost_form='penalty') or "
                               "cost_exponent (cost_form='multiplicative') to pull the search "
                               "under the budget, or top_k to look further")
        started, top = time.perf_counter(), []
        for sample, log_p in reversed(ranked):  # the most probable last: it stays active
            score = scoring.evaluate(sample)
            top.append(context.candidate(sample, score, probability=math.exp(log_p),
                                         seconds=time.perf_counter() - started))
            scoring.on_candidate(top[-1])
        top.reverse()
        best, argmax = top[0], alpha.argmax()
        note = None
        if best.sample != argmax:
            note = (f"the arg-max architecture costs {context.cost_table(argmax)}, over "
                    f"{context.budget}: exported the most probable one within the budget "
                    f"(probability {best.probability:.3g})")
        return context.result(best, top, top, self.name, probabilities=alpha.summary(),
                              argmax=argmax, note=note)

    def metrics(self) -> dict[str, float]:
        entropy = self.alpha.entropy()
        out = {f"entropy/{label}": value for label, value in entropy.items()}
        out["entropy_mean"] = sum(entropy.values()) / max(1, len(entropy))
        out.update(self.last_losses)
        for label, probabilities in self.alpha.summary().items():
            out.update({f"p/{label}={value}": p for value, p in probabilities.items()})
        return out

    # ---- the maths ------------------------------------------------------------------------
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

    def architecture_step(self, step: ArchitectureStep) -> None:
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
        self._mixing(self.generator, two_paths=True)  # past this step's draw
        factor = self._cost_factor(step)
        if factor is not None:  # d(L f) = f dL + L df
            scale = gradients(factor, params)
            grads = [float(factor.detach()) * g + self.last_losses["heldout"] * d
                     for g, d in zip(grads, scale)]
        regular = gradients(self.regulariser(step), params)
        self.optimizer.step([grad + extra for grad, extra in zip(grads, regular)])
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.alpha.load_state_dict(state["alpha"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]
