"""ProxylessNAS (Cai et al. 2019): one sampled path per weight step, two per architecture
step with a binary gate between them."""

from __future__ import annotations

import torch

from .base import STRATEGIES
from .gradient import GradientStrategy, Mixture


@STRATEGIES.register("proxyless")
class ProxylessNAS(GradientStrategy):
    """ProxylessNAS: a weight step trains one path drawn from ``softmax(alpha)``; an
    architecture step draws two candidates per label and a binary gate between them, so the
    forward is one path while the gate's straight-through gradient reaches both candidates'
    logits (the paper's two-path estimator). Pass ``cost_form="multiplicative"`` for the
    paper's cost term (the arguments in full:
    :class:`~nas_aug.strategies.gradient.GradientStrategy`).

    Args:
        lr, weight_decay: Adam's on ``alpha``.
        order: 1 (first order) or 2 (the unrolled hypergradient).
        beta_decay: the weight of beta-DARTS's collapse remedy (0: off).
        cost_weight, cost_form, cost_exponent: how the budget enters the outer loss
            (``"penalty"`` or ProxylessNAS's ``"multiplicative"`` form).

    >>> from nas_aug.space import Space, ValueChoice
    >>> from nas_aug.strategies import SearchContext
    >>> proxyless = ProxylessNAS(cost_form="multiplicative")
    >>> proxyless.setup(SearchContext(torch.nn.Identity(), Space([ValueChoice("d", [1, 2])])))
    >>> sorted(proxyless.train_mixing().weights["d"].tolist())
    [0.0, 1.0]
    """

    name = "proxyless"

    def _mixing(self, generator: torch.Generator, two_paths: bool = False) -> Mixture:
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
