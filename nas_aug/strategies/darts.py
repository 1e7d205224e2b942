"""DARTS (Liu et al. 2019): every candidate mixed by ``softmax(alpha)``."""

from __future__ import annotations

import torch

from .base import STRATEGIES
from .gradient import GradientStrategy, Mixture


@STRATEGIES.register("darts")
class DARTS(GradientStrategy):
    """DARTS with beta-decay: the weights train under the mixture of every candidate by
    ``softmax(alpha)``, and so does the held-out loss of each architecture step (the
    arguments in full: :class:`~nas_aug.strategies.gradient.GradientStrategy`).

    Args:
        lr, weight_decay: Adam's on ``alpha``.
        order: 1 (first order) or 2 (the unrolled hypergradient).
        beta_decay: the weight of beta-DARTS's collapse remedy (0: off).
        cost_weight, cost_form, cost_exponent: how the budget enters the outer loss
            (``"penalty"`` or ProxylessNAS's ``"multiplicative"`` form).

    >>> from nas_aug.space import Space, ValueChoice
    >>> from nas_aug.strategies import SearchContext
    >>> darts = DARTS(lr=3e-3, beta_decay=0.01)
    >>> darts.setup(SearchContext(torch.nn.Identity(), Space([ValueChoice("d", [1, 2])])))
    >>> {k: v.tolist() for k, v in darts.train_mixing().weights.items()}
    {'d': [0.5, 0.5]}
    """

    name = "darts"

    def _mixing(self, generator: torch.Generator, two_paths: bool = False) -> Mixture:
        return Mixture(self.alpha.soft())
