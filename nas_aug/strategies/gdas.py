"""GDAS (Dong & Yang 2019): one candidate per label by hard Gumbel-softmax, annealed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..validation import check_positive
from .base import STRATEGIES, FitInfo
from .gradient import GradientStrategy, Mixture


@STRATEGIES.register("gdas")
class GDAS(GradientStrategy):
    """GDAS: each step draws one candidate per label by hard Gumbel-softmax with
    straight-through gradients, at a temperature annealed linearly from ``temperature[0]``
    to ``temperature[1]`` over the fit's epochs (so the fit needs ``max_epochs``; the other
    arguments in full: :class:`~nas_aug.strategies.gradient.GradientStrategy`).

    Args:
        lr, weight_decay: Adam's on ``alpha``.
        order: 1 (first order) or 2 (the unrolled hypergradient).
        beta_decay: the weight of beta-DARTS's collapse remedy (0: off).
        cost_weight, cost_form, cost_exponent: how the budget enters the outer loss
            (``"penalty"`` or ProxylessNAS's ``"multiplicative"`` form).
        temperature: ``(start, end)`` of the annealed Gumbel-softmax temperature.

    Raises:
        ValueError: a value out of range; in a fit, no ``max_epochs``.

    >>> gdas = GDAS(temperature=(10, 0.1))
    >>> gdas.set_epoch(1, max_epochs=3)
    >>> gdas.temperature
    5.05
    >>> gdas.set_epoch(2, max_epochs=3)
    >>> gdas.temperature
    0.1
    """

    name = "gdas"

    def __init__(self, lr: float = 1e-2, weight_decay: float = 1e-3, order: int = 1,
                 beta_decay: float = 0.01, cost_weight: float = 1.0, cost_form: str = "penalty",
                 cost_exponent: float = 0.6, temperature: tuple[float, float] = (10.0, 0.1)):
        super().__init__(lr, weight_decay, order, beta_decay, cost_weight, cost_form,
                         cost_exponent)
        if not (isinstance(temperature, (tuple, list)) and len(temperature) == 2):
            raise ValueError(f"temperature must be a (start, end) pair, got {temperature!r}")
        self.temperatures = tuple(check_positive("temperature", t) for t in temperature)
        self.temperature = self.temperatures[0]  # the current one

    def options(self) -> dict[str, Any]:
        return {**super().options(), "temperature": self.temperatures}

    def check_fit(self, fit: FitInfo) -> None:
        if not (fit.max_epochs or 0) > 0:
            raise ValueError(f"strategy='gdas' anneals its temperature over the fit's epochs "
                             f"and needs Trainer(max_epochs=...), got {fit.max_epochs!r}")

    def set_epoch(self, epoch: int, max_epochs: int | None) -> None:
        """The temperature for ``epoch`` (0-based): linear from start to end."""
        start, end = self.temperatures
        fraction = epoch / (max_epochs - 1) if max_epochs and max_epochs > 1 else 1.0
        fraction = min(1.0, fraction)
        self.temperature = start * (1.0 - fraction) + end * fraction

    def _mixing(self, generator: torch.Generator, two_paths: bool = False) -> Mixture:
        return Mixture(self.alpha.gumbel(self.temperature, generator))

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "temperature": self.temperature}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "temperature": self.temperature}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.temperature = state["temperature"]
