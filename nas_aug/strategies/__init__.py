"""One-shot NAS strategies (one file each, behind :class:`Strategy`) and outer searchers
(one file each, behind :class:`Searcher`'s ask/tell), each registered by name.

>>> from nas_aug.strategies import DARTS, STRATEGIES, SEARCHERS
>>> STRATEGIES.names(), SEARCHERS.names()  # doctest: +NORMALIZE_WHITESPACE
(['darts', 'gdas', 'proxyless', 'spos'],
 ['aging_evolution', 'evolution', 'local_search', 'optuna', 'random'])
"""

from .aging_evolution import AgingEvolution
from .base import STRATEGIES, FitInfo, Scoring, SearchContext, Strategy, get_strategy
from .darts import DARTS
from .evolution import Evolution
from .gdas import GDAS
from .gradient import GradientStrategy
from .local_search import LocalSearch
from .optuna_search import OptunaSearch
from .proxyless import ProxylessNAS
from .random_search import RandomSearch
from .searcher import SEARCHERS, Searcher, get_searcher
from .spos import SAMPLINGS, SPOS, SandwichSampling, UniformSampling

__all__ = ["DARTS", "GDAS", "SAMPLINGS", "SEARCHERS", "SPOS", "STRATEGIES", "AgingEvolution",
           "Evolution", "FitInfo", "GradientStrategy", "LocalSearch", "OptunaSearch",
           "ProxylessNAS",
           "RandomSearch", "SandwichSampling", "Scoring", "SearchContext", "Searcher",
           "Strategy", "UniformSampling", "get_searcher", "get_strategy"]


def __getattr__(name: str):
    if name == "EvolutionSearch":  # the name of one release ago
        import warnings

        warnings.warn("EvolutionSearch is now nas_aug.strategies.Evolution", DeprecationWarning,
                      stacklevel=2)
        return Evolution
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
