"""Per-module mixing, for gradient-based one-shot NAS (DARTS, GDAS, FBNetV2): each label gets
a vector of weights over its candidates (a :class:`Mix`), and every choice module that holds
one computes the weighted mixture of its candidates with the shared weights of the supernet.

* a layer choice gives ``sum_i a_i * op_i(x)``, an elastic depth ``sum_d a_d * (x after d
  blocks)``, an elastic kernel one kernel ``sum_k a_k * (centre crop k, zero-padded)``;
* an elastic width runs at its largest candidate with a non-zero weight, and the layers that
  read that width mask their input channels by ``sum_w a_w * 1[c < w]`` (FBNetV2's mask, after
  any batch norm and activation in between, which act channel by channel).

Only candidates with a non-zero weight are computed, so hard one-hot weights with
straight-through gradients (GDAS) cost one path, and one-hot weights give the plain forward
of that sample. Setting the mixture on a whole supernet (which labels set the input width of
each layer, which labels cannot be mixed) is :func:`nas_aug.supernet.set_mixing`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..validation import closest_match
from .choice import Space

__all__ = ["Mix", "UnmixableError", "check_weights"]


class UnmixableError(ValueError):
    """A label whose candidates cannot be mixed differentiably; ``why`` says why.

    >>> err = UnmixableError("op", "its candidates give outputs of different shapes")
    >>> err.label, isinstance(err, ValueError)
    ('op', True)
    """

    def __init__(self, label: str, why: str):
        super().__init__(f"label {label!r} cannot be mixed differentiably: {why}. Search it "
                         "with a sampling strategy instead (SPOS: one sampled path per step, "
                         "OneShotNAS(strategy='spos'))")
        self.label, self.why = label, why


@dataclass(frozen=True, eq=False)
class Mix:
    """The weights of one label over its candidates; ``active`` lists the non-zero ones, the
    only candidates a mixed forward computes.

    >>> mix = Mix("w", torch.tensor([0.0, 0.25, 0.75]), active=(1, 2))
    >>> mix.combine(lambda i: torch.tensor([10.0 * i]))
    tensor([17.5000])
    >>> mix.mask([2, 3, 4], 4, torch.zeros(1))
    tensor([1.0000, 1.0000, 1.0000, 0.7500])
    >>> mix.largest([2, 3, 4])
    4
    """

    label: str
    weights: Tensor
    active: tuple[int, ...]

    def __deepcopy__(self, memo: dict) -> Mix:
        return self  # a copied supernet mixes with the same weights (and their graph)

    def largest(self, values: Sequence) -> object:
        """The largest of ``values[i]`` over the active candidates ``i``."""
        return max(values[i] for i in self.active)

    def combine(self, term: Callable[[int], Tensor]) -> Tensor:
        """``sum_i weights[i] * term(i)`` over the active candidates ``i``."""
        terms = [term(i) for i in self.active]
        shapes = sorted({tuple(t.shape) for t in terms})
        if len(shapes) > 1:
            raise UnmixableError(self.label,
                                 f"its candidates give outputs of different shapes {shapes}")
        total = None
        for i, t in zip(self.active, terms):
            t = self.weights[i].to(t.dtype) * t
            total = t if total is None else total + t
        return total

    def mask(self, widths: Sequence[int], size: int, like: Tensor) -> Tensor:
        """``sum_i weights[i] * 1[c < widths[i]]`` for ``c < size``, dtype and device of
        ``like``: the mixed mask of a tensor whose width is ``widths[i]`` under candidate ``i``."""
        channels = torch.arange(size, device=like.device)
        return self.combine(lambda i: (channels < widths[i]).to(like.dtype))


def check_weights(space: Space, weights: Mapping[str, Tensor],
                  complete: bool = False) -> dict[str, Tensor]:
    """``weights`` as a dict, once each is a 1-D floating-point tensor with one entry per
    candidate (in candidate order) of a label of ``space``, and, if ``complete``, every label
    has one. Raises ``ValueError`` naming the label, the value and what is accepted.

    >>> from nas_aug.space import ValueChoice
    >>> space = Space([ValueChoice("k", [3, 5])])
    >>> check_weights(space, {"k": torch.tensor([0.5, 0.5, 0.0])})
    Traceback (most recent call last):
    ...
    ValueError: weights['k'] = tensor([...]) of shape (3,): expected ... one per candidate of [3, 5]
    """
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights are a {{label: tensor}} dict, got {type(weights).__name__}")
    for label, value in weights.items():
        if label not in space:
            raise ValueError(f"unknown label {label!r}{closest_match(label, space.labels)}; "
                             f"labels are {list(space.labels)}")
        candidates = list(space.candidates(label))
        if not (isinstance(value, Tensor) and value.is_floating_point() and value.dim() == 1
                and len(value) == len(candidates)):
            shape = f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
            raise ValueError(f"weights[{label!r}] = {value!r}{shape}: expected a 1-D "
                             f"floating-point tensor of {len(candidates)} weights, one per "
                             f"candidate of {candidates}")
    missing = [label for label in space.labels if label not in weights]
    if complete and missing:
        raise ValueError(f"weights are missing for labels {missing}: every label needs one")
    return dict(weights)
