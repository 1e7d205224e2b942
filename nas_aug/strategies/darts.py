"""DARTS (Liu et al. 2019): every candidate mixed by ``softmax(alpha)``."""

from __future__ import annotations

import torch

from .base import STRATEGIES
from .gradient import GradientStrategy, Mixture


@STRATEGIES.register("darts")
class DARTS(GradientStrategy):
    """DARTS with beta-decay: the weights train under the mixture of every candidate by
    ``softmax(alpha)``, and so does the held-out loss of each architecture step. The
    arguments are :class:`~nas_aug.strategies.gradient.GradientStrategy`'s.

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
