"""Cost models: MAC counters (fvcore, torch), budgets, and per-choice cost tables."""

from .budget import Budget, Cost, check_budgets
from .cost_table import CostTable
from .counters import FvcoreCounter, MacCounter, TorchCounter, count_params, get_counter

__all__ = ["Budget", "Cost", "CostTable", "FvcoreCounter", "MacCounter", "TorchCounter",
           "check_budgets", "count_params", "get_counter"]
