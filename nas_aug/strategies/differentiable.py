"""Architecture parameters for gradient-based one-shot NAS: one logit vector per label.

``alpha`` turns into mixing weights for the supernet's mixed forward
(:func:`nas_aug.supernet.set_mixing`): DARTS mixes every candidate by ``softmax(alpha)``; GDAS
draws one candidate per label by hard Gumbel-softmax with straight-through gradients, at a
temperature annealed over the fit. The derived architecture is the most probable one (labels
are independent, so the arg-max per label); :meth:`ArchitectureParameters.top_k` lists the
``k`` most probable architectures exactly, optionally only those a constraint admits.

The collapse remedy is beta-decay regularisation (beta-DARTS, Ye et al. 2022), which keeps the
softmax of ``alpha`` from saturating early on the candidates that help the first steps most (in
DARTS, parameter-free operations; in elastic spaces, the shallow and narrow ones). We use its
shift-invariant form, ``sum_label logsumexp(alpha_label) - mean(alpha_label)``, which equals
``sum_label KL(uniform || softmax(alpha_label))`` up to a constant: its gradient
``softmax(alpha) - 1/n`` pulls each distribution towards uniform. The plain ``logsumexp``
adds a gradient common to all candidates of a label, which changes no probability but, under
Adam's per-coordinate normalisation, shrinks every other step on ``alpha``.

>>> from nas_aug.space import Space, ValueChoice
>>> alpha = ArchitectureParameters(Space([ValueChoice("k", [3, 5]), ValueChoice("d", [1, 2, 3])]))
>>> {label: p.tolist() for label, p in alpha.probabilities().items()}
{'k': [0.5, 0.5], 'd': [0.3333333432674408, 0.3333333432674408, 0.3333333432674408]}
>>> with torch.no_grad():
...     alpha.logits["d"][2] = 1.0
>>> alpha.argmax()
{'k': 3, 'd': 3}
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor, nn

from ..space import Sample, Space

__all__ = ["ArchitectureParameters", "gumbel_hard"]


def gumbel_hard(logits: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
    """A one-hot sample of ``softmax(logits)`` whose gradient is that of the tempered
    Gumbel-softmax (straight-through), as GDAS draws it."""
    uniform = torch.rand(logits.shape, generator=generator).clamp(1e-10, 1 - 1e-7)
    gumbel = -torch.log(-torch.log(uniform)).to(logits.device)
    soft = torch.softmax((logits + gumbel) / temperature, dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class _Logits(nn.ParameterDict):
    """A ``ParameterDict`` keyed by labels, which may hold dots (ParameterDict keys may not)."""

    def __getitem__(self, label: str) -> nn.Parameter:
        return super().__getitem__(label.replace(".", "/"))


class ArchitectureParameters(nn.Module):
    """``alpha``: one logit per candidate of each label of ``space``, zero at the start (a
    uniform distribution, as DARTS initialises up to tiny noise).

    >>> from nas_aug.space import Space, ValueChoice
    >>> alpha = ArchitectureParameters(Space([ValueChoice("stage1.kernel", [3, 5])]))
    >>> alpha.logits["stage1.kernel"].shape, alpha.entropy()
    (torch.Size([2]), {'stage1.kernel': 0.6931471824645996})
    """

    def __init__(self, space: Space):
        super().__init__()
        self.space = space
        self.labels = space.labels
        self.logits = _Logits({label.replace(".", "/"): nn.Parameter(
            torch.zeros(len(space.candidates(label)))) for label in self.labels})

    def _items(self):
        return ((label, self.logits[label]) for label in self.labels)

    def probabilities(self) -> dict[str, Tensor]:
        """``softmax(alpha)`` per label, detached."""
        return {label: torch.softmax(logit.detach(), -1) for label, logit in self._items()}

    def soft(self) -> dict[str, Tensor]:
        """DARTS's mixing weights, ``softmax(alpha)`` per label, with their graph."""
        return {label: torch.softmax(logit, -1) for label, logit in self._items()}

    def gumbel(self, temperature: float, generator: torch.Generator) -> dict[str, Tensor]:
        """GDAS's mixing weights: one hard, straight-through Gumbel-softmax draw per label."""
        return {label: gumbel_hard(logit, temperature, generator)
                for label, logit in self._items()}

    def beta_decay(self) -> Tensor:
        """beta-DARTS's regulariser in its shift-invariant form,
        ``sum_label logsumexp(alpha_label) - mean(alpha_label)``; zero gradient when uniform."""
        return sum(torch.logsumexp(logit, -1) - logit.mean() for _, logit in self._items())

    def entropy(self) -> dict[str, float]:
        """The entropy (nats) of each label's distribution; ``log n`` when uniform."""
        return {label: float(-(p * torch.log(p.clamp_min(1e-12))).sum())
                for label, p in self.probabilities().items()}

    def argmax(self) -> Sample:
        """The most probable architecture (the first candidate among equal logits)."""
        return {label: self.space.candidates(label)[int(p.argmax())]
                for label, p in self.probabilities().items()}

    def log_probability(self, sample: Sample) -> float:
        """``log P(sample)`` under the independent per-label distributions."""
        return sum(math.log(float(p[self.space.candidates(label).index(sample[label])]))
                   for label, p in self.probabilities().items())

    def top_k(self, k: int, allowed: Callable[[Sample], bool] | None = None,
              max_visits: int = 100_000, key: Callable[[Sample], Hashable] | None = None
              ) -> list[tuple[Sample, float]]:
        """The ``k`` most probable samples that ``allowed`` admits, most probable first, with
        their log-probabilities; exact (best-first enumeration over the product space),
        stopping after ``max_visits`` samples. Samples with equal ``key`` are one network
        (they differ in labels without effect): only the most probable of them is listed.

        >>> from nas_aug.space import Space, ValueChoice
        >>> alpha = ArchitectureParameters(Space([ValueChoice("w", [8, 16, 32]),
        ...                                       ValueChoice("unused", [0, 1])]))
        >>> with torch.no_grad():
        ...     _ = alpha.logits["w"].copy_(torch.tensor([0.0, 1.0, 2.0]))
        >>> [s["w"] for s, _ in alpha.top_k(2, allowed=lambda s: s["w"] < 32)]
        [16, 16]
        >>> [s["w"] for s, _ in alpha.top_k(2, lambda s: s["w"] < 32, key=lambda s: s["w"])]
        [16, 8]
        """
        probs = self.probabilities()
        # per label: candidate indices by decreasing probability, and their log-probabilities
        orders = [torch.argsort(probs[label], descending=True, stable=True).tolist()
                  for label in self.labels]
        logs = [[math.log(max(float(probs[label][i]), 1e-300)) for i in order]
                for label, order in zip(self.labels, orders)]

        def sample_of(ranks: tuple[int, ...]) -> Sample:
            return {label: self.space.candidates(label)[order[r]]
                    for label, order, r in zip(self.labels, orders, ranks)}

        start = (0,) * len(self.labels)
        frontier = [(-sum(log[0] for log in logs), start)]
        seen, found, networks, visits = {start}, [], set(), 0
        while frontier and len(found) < k and visits < max_visits:
            negative, ranks = heapq.heappop(frontier)
            visits += 1
            sample = sample_of(ranks)
            if allowed is None or allowed(sample):
                network = ranks if key is None else key(sample)
                if network not in networks:
                    networks.add(network)
                    found.append((sample, -negative))
            for i, log in enumerate(logs):  # successors: one label one rank further down
                if ranks[i] + 1 < len(log):
                    nxt = ranks[:i] + (ranks[i] + 1,) + ranks[i + 1:]
                    if nxt not in seen:
                        seen.add(nxt)
                        heapq.heappush(frontier, (negative + log[ranks[i]] - log[ranks[i] + 1],
                                                  nxt))
        return found

    def summary(self) -> dict[str, Any]:
        """Plain data: each label's candidates with their probabilities."""
        return {label: {str(c): round(float(p_i), 6) for c, p_i in
                        zip(self.space.candidates(label), p)}
                for label, p in self.probabilities().items()}
