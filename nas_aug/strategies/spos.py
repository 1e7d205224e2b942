"""Single-path one-shot NAS (SPOS, Guo et al. 2020): train sampled paths, then search.

Each training step trains one uniformly sampled path of the supernet (or, with the sandwich
rule, the largest, the smallest and random paths together; with attentive sampling, paths
chosen by their loss on the step's batch); when training ends, the outer
searcher (evolution by default) scores sub-networks on held-out data, each with batch norm
recalibrated, keeps those within the budget and leaves the best active.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

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
BatchLoss = Callable[[Sample], float | None]  # a path's loss on the step's training batch


@SAMPLINGS.register("uniform")
class UniformSampling:
    """One uniformly random path per step (SPOS). ``num_random`` is accepted for a common
    constructor and must be 1.

    >>> from nas_aug.space import ValueChoice
    >>> len(UniformSampling().paths(Space([ValueChoice("k", [3, 5])]), random.Random(0)))
    1
    """

    extra_paths: ClassVar[bool] = False  # paths beyond the first, trained in the same step

    def __init__(self, num_random: int = 1):
        if num_random != 1:
            raise ValueError(f"uniform sampling trains one random path per step; "
                             f"sandwich_random={num_random!r} needs sampling='sandwich'")

    def paths(self, space: Space, rng: random.Random, loss: BatchLoss | None = None
              ) -> list[Sample]:
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

    extra_paths: ClassVar[bool] = True

    def __init__(self, num_random: int = 1):
        self.num_random = check_int("sandwich_random", num_random, 0)

    def paths(self, space: Space, rng: random.Random, loss: BatchLoss | None = None
              ) -> list[Sample]:
        return [space.largest(), space.smallest()] + [self.random_path(space, rng, loss)
                                                      for _ in range(self.num_random)]

    def random_path(self, space: Space, rng: random.Random, loss: BatchLoss | None
                    ) -> Sample:
        return space.random(rng)


ATTENTIVE_PICKS: Registry[Callable] = Registry("attentive pick")
ATTENTIVE_PICKS.add("worst", max)  # WorstUp: the highest loss among the candidates
ATTENTIVE_PICKS.add("best", min)  # BestUp: the lowest


@SAMPLINGS.register("attentive")
class AttentiveSampling(SandwichSampling):
    """The sandwich rule whose random paths are attentive (AttentiveNAS, Wang et al. 2021,
    without its accuracy predictor): each is the ``pick`` (``"worst"``: WorstUp, the highest
    loss; ``"best"``: BestUp, the lowest) of ``candidates`` uniformly drawn paths by their
    ``loss`` on the step's training batch, ties to the first drawn. The candidates come from
    the whole space, not from one FLOPs bin as in the paper. A batch the user's step skips
    (``loss`` gives ``None``) takes the first candidate.

    >>> from nas_aug.space import ValueChoice
    >>> space = Space([ValueChoice("k", [3, 5, 7])])
    >>> worst = AttentiveSampling(1, candidates=3).paths(space, random.Random(0),
    ...                                                  lambda path: -path["k"])
    >>> [p["k"] for p in worst]  # largest, smallest, the smallest k of the 3 drawn
    [7, 3, 3]
    """

    def __init__(self, num_random: int = 1, candidates: int = 3, pick: str = "worst"):
        super().__init__(num_random)
        self.candidates = check_int("attentive_candidates", candidates, 2)
        self.pick = ATTENTIVE_PICKS.get(pick)

    def random_path(self, space: Space, rng: random.Random, loss: BatchLoss | None
                    ) -> Sample:
        if loss is None:
            raise RuntimeError("attentive sampling chooses paths by their loss on the step's "
                               "batch: the strategy needs set_batch_loss(...) before each "
                               "train_paths() (OneShotNAS gives it)")
        drawn = [space.random(rng) for _ in range(self.candidates)]
        losses = [loss(path) for path in drawn]
        if None in losses:
            return drawn[0]
        return drawn[self.pick(range(len(drawn)), key=losses.__getitem__)]


_ATTENTIVE_DEFAULTS = (3, "worst")  # SPOS's attentive_candidates and attentive


@STRATEGIES.register("spos")
class SPOS(Strategy):
    """Single-path one-shot: sampled paths train, the outer searcher picks the winner.

    Args:
        sampling: ``"uniform"`` (one random path per step), ``"sandwich"`` (the largest,
            the smallest and ``sandwich_random`` random paths per step, gradients summed) or
            ``"attentive"`` (the sandwich rule whose random paths are each chosen among
            ``attentive_candidates`` random ones by their loss on the step's batch:
            :class:`AttentiveSampling`).
        sandwich_random: random paths per step under the sandwich rule (and attentive).
        distill_weight: in-place distillation (BigNAS) under the sandwich rule (and
            attentive): every path after the largest trains on the user's loss plus
            ``distill_weight`` times the KL divergence from the largest path's detached soft
            predictions of the same batch (0: off).
        distill_temperature: the softmax temperature ``T`` of that KL term (scaled by
            ``T**2``, as in knowledge distillation).
        attentive_candidates: under attentive sampling, the paths drawn per random path
            (each costs a forward without gradients on the batch).
        attentive: which candidate trains: ``"worst"`` (the highest loss: WorstUp) or
            ``"best"`` (the lowest: BestUp).

    Raises:
        ValueError: an unknown sampling, ``sandwich_random`` other than 1 with uniform
            sampling, distillation with uniform sampling, attentive options without
            attentive sampling, fewer than 2 candidates or an unknown pick, or a negative
            weight or a temperature not above 0; in a fit, extra paths per step (sandwich,
            attentive) with several processes or manual optimization.

    >>> SPOS(sampling="sandwich", sandwich_random=2)
    SPOS(sampling='sandwich', sandwich_random=2, distill_weight=0.0, distill_temperature=1.0)
    >>> SPOS(sampling="sandwich", distill_weight=1.0).distills
    True
    >>> SPOS(sampling="attentive", attentive_candidates=4, attentive="best")  # doctest: +ELLIPSIS
    SPOS(sampling='attentive', ..., attentive_candidates=4, attentive='best')
    """

    name = "spos"
    uses_searcher = True
    family = "path-sampling"

    def __init__(self, sampling: str = "uniform", sandwich_random: int = 1,
                 distill_weight: float = 0.0, distill_temperature: float = 1.0,
                 attentive_candidates: int = 3, attentive: str = "worst"):
        self.sampling, self.sandwich_random = sampling, sandwich_random
        self.attentive_candidates, self.attentive = attentive_candidates, attentive
        sampler = SAMPLINGS.get(sampling)
        if sampler is AttentiveSampling:
            self._sampler = sampler(sandwich_random, attentive_candidates, attentive)
        elif (attentive_candidates, attentive) != _ATTENTIVE_DEFAULTS:
            raise ValueError(f"attentive_candidates={attentive_candidates!r} and "
                             f"attentive={attentive!r} choose the random paths of "
                             f"sampling='attentive' (got sampling={sampling!r})")
        else:
            self._sampler = sampler(sandwich_random)
        self.distill_weight = check_positive("distill_weight", distill_weight, allow_zero=True)
        self.distill_temperature = check_positive("distill_temperature", distill_temperature)
        self.distills = self.distill_weight > 0
        if self.distills and not self._sampler.extra_paths:
            raise ValueError(f"distill_weight={distill_weight!r} distils the largest path into "
                             f"the others of a step, which needs sampling='sandwich' or "
                             f"'attentive' (got {sampling!r})")
        self.rng = random.Random(0)
        self.search_state: dict[str, Any] | None = None  # the searcher's, once finished
        self._sampled_macs = [0, 0]  # this epoch's trained paths: their MACs summed, count
        self._batch_loss: BatchLoss | None = None  # this step's, until train_paths

    def seed(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def options(self) -> dict[str, Any]:
        """The settings; the attentive ones only under attentive sampling (elsewhere they
        are at their defaults), so other samplings keep their ``repr`` and state key."""
        options = super().options()
        if self.sampling != "attentive":
            del options["attentive_candidates"], options["attentive"]
        return options

    def check_fit(self, fit: FitInfo) -> None:
        if not self._sampler.extra_paths:
            return
        if fit.world_size > 1:
            raise ValueError(
                f"sampling={self.sampling!r} runs extra backward passes that a multi-process "
                f"fit (world_size={fit.world_size}) would synchronise each time; use "
                "sampling='uniform' or devices=1")
        if not fit.automatic_optimization:
            raise ValueError(f"sampling={self.sampling!r} adds the gradients of extra paths "
                             "before the optimizer step, which needs automatic optimization; "
                             "use sampling='uniform' with manual optimization")

    def check_budget(self) -> None:
        try:  # draw the first batch of the search now (look-ups only): a tight budget fails
            self.context.new_search().ask()
        except ValueError as err:
            smallest = self.context.cost_table(self.context.space.smallest())
            raise ValueError(f"{self.context.budget} admits too few architectures for the "
                             f"search (the smallest costs {smallest}): {err}") from None

    def set_epoch(self, epoch: int, max_epochs: int | None) -> None:
        self._sampled_macs = [0, 0]

    def set_batch_loss(self, loss: BatchLoss) -> None:
        self._batch_loss = loss

    def train_paths(self) -> list[Sample]:
        loss, self._batch_loss = self._batch_loss, None  # the batch is this step's only
        first, *extra = self._sampler.paths(self.context.space, self.rng, loss)
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
