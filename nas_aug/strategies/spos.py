"""Single-path one-shot NAS (SPOS, Guo et al. 2020): train sampled paths, then search.

Each training step trains one uniformly sampled path of the supernet (or, with the sandwich
rule, the largest, the smallest and random paths together); when training ends, the outer
searcher (evolution by default) scores sub-networks on held-out data, each with batch norm
recalibrated, keeps those within the budget and leaves the best active.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..registry import Registry
from ..result import Candidate, SearchResult
from ..rng import restore_rng, rng_state
from ..space import Sample, Space
from ..space.choice import sample_key
from ..supernet import activate
from ..validation import check_int, check_positive
from .base import STRATEGIES, FitInfo, Scoring, Strategy

SAMPLINGS: Registry[type] = Registry("sampling")


@SAMPLINGS.register("uniform")
class UniformSampling:
    """One uniformly random path per step (SPOS). ``num_random`` is accepted for a common
    constructor and must be 1.

    >>> from nas_aug.space import ValueChoice
    >>> len(UniformSampling().paths(Space([ValueChoice("k", [3, 5])]), random.Random(0)))
    1
    """

    def __init__(self, num_random: int = 1):
        if num_random != 1:
            raise ValueError(f"uniform sampling trains one random path per step; "
                             f"sandwich_random={num_random!r} needs sampling='sandwich'")

    def paths(self, space: Space, rng: random.Random) -> list[Sample]:
        return [space.random(rng)]


@SAMPLINGS.register("sandwich")
class SandwichSampling:
    """The sandwich rule (BigNAS / slimmable networks): the largest, the smallest and
    ``num_random`` random paths, their gradients summed in one step.

    >>> from nas_aug.space import ValueChoice
    >>> paths = SandwichSampling(2).paths(Space([ValueChoice("k", [3, 5])]), random.Random(0))
    >>> [p["k"] for p in paths[:2]], len(paths)
    ([5, 3], 4)
    """

    def __init__(self, num_random: int = 1):
        self.num_random = check_int("sandwich_random", num_random, 0)

    def paths(self, space: Space, rng: random.Random) -> list[Sample]:
        return [space.largest(), space.smallest()] + [space.random(rng)
                                                      for _ in range(self.num_random)]


@STRATEGIES.register("spos")
class SPOS(Strategy):
    """Single-path one-shot: sampled paths train, the outer searcher picks the winner.

    Args:
        sampling: ``"uniform"`` (one random path per step) or ``"sandwich"`` (the largest,
            the smallest and ``sandwich_random`` random paths per step, gradients summed).
        sandwich_random: random paths per step under the sandwich rule.
        distill_weight: in-place distillation (BigNAS) under the sandwich rule: every path
            after the largest trains on the user's loss plus ``distill_weight`` times the KL
            divergence from the largest path's detached soft predictions of the same batch
            (0: off).
        distill_temperature: the softmax temperature ``T`` of that KL term (scaled by
            ``T**2``, as in knowledge distillation).

    Raises:
        ValueError: an unknown sampling, ``sandwich_random`` other than 1 with uniform
            sampling, distillation without the sandwich rule, or a negative weight or a
            temperature not above 0; in a fit, the sandwich rule with several processes or
            manual optimization.

    >>> SPOS(sampling="sandwich", sandwich_random=2)
    SPOS(sampling='sandwich', sandwich_random=2, distill_weight=0.0, distill_temperature=1.0)
    >>> SPOS(sampling="sandwich", distill_weight=1.0).distills
    True
    """

    name = "spos"
    uses_searcher = True
    family = "path-sampling"

    def __init__(self, sampling: str = "uniform", sandwich_random: int = 1,
                 distill_weight: float = 0.0, distill_temperature: float = 1.0):
        self.sampling, self.sandwich_random = sampling, sandwich_random
        self._sampler = SAMPLINGS.get(sampling)(sandwich_random)
        self.distill_weight = check_positive("distill_weight", distill_weight, allow_zero=True)
        self.distill_temperature = check_positive("distill_temperature", distill_temperature)
        self.distills = self.distill_weight > 0
        if self.distills and sampling != "sandwich":
            raise ValueError(f"distill_weight={distill_weight!r} distils the largest path into "
                             f"the others of a step, which needs sampling='sandwich' (got "
                             f"{sampling!r})")
        self.rng = random.Random(0)
        self.search_state: dict[str, Any] | None = None  # the searcher's, once finished
        self._sampled_macs = [0, 0]  # this epoch's trained paths: their MACs summed, count

    def seed(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def check_fit(self, fit: FitInfo) -> None:
        if self.sampling != "sandwich":
            return
        if fit.world_size > 1:
            raise ValueError(
                f"sampling='sandwich' runs extra backward passes that a multi-process fit "
                f"(world_size={fit.world_size}) would synchronise each time; use "
                "sampling='uniform' or devices=1")
        if not fit.automatic_optimization:
            raise ValueError("sampling='sandwich' adds the gradients of extra paths before the "
                             "optimizer step, which needs automatic optimization; use "
                             "sampling='uniform' with manual optimization")

    def check_budget(self) -> None:
        try:  # draw the first batch of the search now (look-ups only): a tight budget fails
            self.context.new_search().ask()
        except ValueError as err:
            smallest = self.context.cost_table(self.context.space.smallest())
            raise ValueError(f"{self.context.budget} admits too few architectures for the "
                             f"search (the smallest costs {smallest}): {err}") from None

    def set_epoch(self, epoch: int, max_epochs: int | None) -> None:
        self._sampled_macs = [0, 0]

    def train_paths(self) -> list[Sample]:
        first, *extra = self._sampler.paths(self.context.space, self.rng)
        activate(self.context.supernet, first, self.context.space)
        for path in (first, *extra):
            self._sampled_macs[0] += self.context.cost_table(path).macs
            self._sampled_macs[1] += 1
        return extra

    def metrics(self) -> dict[str, float]:
        """The mean MACs of the paths trained this epoch."""
        total, count = self._sampled_macs
        return {"sampled_macs_mean": total / count} if count else {}

    def validation_sample(self) -> Sample:
        return self.context.space.largest()

    def path_loss(self, loss: torch.Tensor, logits: torch.Tensor,
                  teacher: torch.Tensor) -> torch.Tensor:
        t = self.distill_temperature
        kl = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                      reduction="batchmean", log_target=True)
        return loss + self.distill_weight * t * t * kl

    def finish(self, scoring: Scoring) -> SearchResult:
        context, table = self.context, self.context.cost_table
        search = context.new_search()
        candidates: list[Candidate] = []
        if scoring.saved is not None:  # an interrupted search on this supernet goes on
            search.load_state_dict(scoring.saved["searcher"])
            candidates = [Candidate.from_json(c) for c in scoring.saved["candidates"]]
        started = time.perf_counter() - (candidates[-1].seconds if candidates else 0.0)

        def record(sample: Sample, score: float) -> float:
            candidates.append(context.candidate(sample, score,
                                                seconds=time.perf_counter() - started))
            scoring.on_candidate(candidates[-1])
            return score

        def evaluate(sample: Sample) -> float:
            return record(sample, scoring.evaluate(sample))

        def evaluate_batch(samples: list[Sample]) -> list[float]:
            return [record(s, v) for s, v in zip(samples, scoring.evaluate_many(samples))]

        def save() -> None:
            scoring.save_state({"searcher": search.state_dict(),
                                "candidates": [c.to_json() for c in candidates]})

        search.run(evaluate, progress=scoring.progress, after_tell=save,
                   evaluate_batch=None if scoring.evaluate_many is None else evaluate_batch)
        self.search_state = search.state_dict()
        history, feasible = list(search.history), context.feasible()
        seen = {sample_key(sample) for sample, _ in history}
        history += [(seed, evaluate(seed)) for seed in scoring.seeds
                    if sample_key(seed) not in seen and (feasible is None or feasible(seed))]
        # best score first; among equal scores (common on small held-out sets) the cheapest
        ranked = sorted(history, key=lambda pair: (-pair[1], table(pair[0]).macs,
                                                   table(pair[0]).params))
        sample, score = ranked[0]
        scoring.evaluate(sample)  # leave the winner active, with its own batch-norm statistics
        top = [context.candidate(s, v) for s, v in ranked[:scoring.top_k]]
        return context.result(context.candidate(sample, score), top, candidates, self.name)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng), "search": self.search_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng = restore_rng(state["rng"])
        self.search_state = state.get("search")
