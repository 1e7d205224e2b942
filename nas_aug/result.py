"""What a search found, typed: each scored :class:`Candidate`, and the :class:`SearchResult`.

Both turn into plain JSON data (``to_json``) for checkpoints, ``candidates.json`` and the
export, and back (``from_json``).

>>> from nas_aug.constraints import Cost
>>> best = Candidate.of({"k": 3}, 0.9, Cost(macs=1200, params=300), seconds=1.5)
>>> best.to_json()
{'sample': {'k': 3}, 'score': 0.9, 'macs': 1200, 'params': 300, 'seconds': 1.5}
>>> result = SearchResult(chosen=best, top=[best], candidates=[best], strategy="spos",
...                       input_shape=(1, 8, 8))
>>> SearchResult.from_json(result.to_json()) == result
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .constraints import Budget, Cost
from .space.choice import Sample

# the keys a candidate must have for the plots (nas_aug.plots)
PLOTTED = {"plotted": True}


@dataclass(frozen=True)
class Candidate:
    """One scored sub-network: its sample, held-out score and cost; ``seconds`` since the
    search began when it was scored; ``probability`` under a gradient strategy's
    distribution. Optional fields that are ``None`` stay out of its JSON.

    >>> Candidate.of({"k": 3}, 0.5, Cost(macs=10, params=2)).cost
    Cost(macs=10, params=2, latency_ms=None)
    """

    sample: Sample
    score: float | None = field(metadata=PLOTTED)  # None: not scored
    macs: int = field(metadata=PLOTTED)
    params: int = field(metadata=PLOTTED)
    latency_ms: float | None = None  # where a latency table was measured
    seconds: float | None = field(default=None, metadata=PLOTTED)
    probability: float | None = None

    @classmethod
    def of(cls, sample: Sample, score: float, cost: Cost, **extra: Any) -> Candidate:
        return cls(dict(sample), None if score is None else float(score), cost.macs,
                   cost.params, cost.latency_ms, **extra)

    @property
    def cost(self) -> Cost:
        return Cost(macs=self.macs, params=self.params, latency_ms=self.latency_ms)

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items()
                if value is not None or key == "score"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


CANDIDATE_KEYS = tuple(f.name for f in fields(Candidate) if f.metadata.get("plotted"))


@dataclass
class SearchResult:
    """A finished search: the ``chosen`` candidate (active in the supernet when the search
    returns), the ``top`` ones, every ``candidates`` scored, and how it was found.

    ``probabilities`` / ``argmax``: a gradient strategy's final distribution and its most
    probable architecture; ``note`` says why the chosen one differs from what the strategy
    preferred; ``cost`` is what the search cost (:class:`~nas_aug.accounting.SearchCost` as
    JSON); ``references`` are the largest and smallest sub-networks with their costs (and,
    with a budget, the largest within it), the baselines every result is read against;
    ``precision`` is the Lightning precision the held-out scores were measured under
    (``"bf16-mixed"``: under autocast, which the export does not run in); ``costs_cover`` says
    what the costs leave out of the user's model.

    >>> best = Candidate({"k": 5}, score=0.9, macs=20, params=4)
    >>> SearchResult(best, [best], [best], "spos", (1, 8, 8)).sample
    {'k': 5}
    """

    chosen: Candidate
    top: list[Candidate]
    candidates: list[Candidate]
    strategy: str
    input_shape: tuple[int, ...]
    budget: Budget | None = None
    probabilities: dict[str, Any] | None = None
    argmax: Sample | None = None
    note: str | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    references: dict[str, Candidate] = field(default_factory=dict)
    precision: str | None = None
    costs_cover: str | None = None

    @property
    def sample(self) -> Sample:
        return self.chosen.sample

    @property
    def score(self) -> float:
        return self.chosen.score

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(chosen=self.chosen.to_json(), top=[c.to_json() for c in self.top],
                    candidates=[c.to_json() for c in self.candidates],
                    input_shape=list(self.input_shape),
                    budget=None if self.budget is None else asdict(self.budget),
                    references={k: c.to_json() for k, c in self.references.items()})
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        data = dict(data)
        data.update(chosen=Candidate.from_json(data["chosen"]),
                    top=[Candidate.from_json(c) for c in data["top"]],
                    candidates=[Candidate.from_json(c) for c in data["candidates"]],
                    input_shape=tuple(data["input_shape"]),
                    budget=None if data.get("budget") is None else Budget(**data["budget"]),
                    references={k: Candidate.from_json(c)
                                for k, c in data.get("references", {}).items()})
        return cls(**data)
