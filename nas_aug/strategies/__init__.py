"""Search strategies: path sampling for supernet training, the evolutionary outer search,
and the scoring of one sub-network (batch-norm recalibration, held-out accuracy)."""

from .evolution import EvolutionSearch
from .sampling import SAMPLINGS, SandwichSampling, UniformSampling

__all__ = ["SAMPLINGS", "EvolutionSearch", "SandwichSampling", "UniformSampling"]
