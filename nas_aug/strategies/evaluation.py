"""Scoring one sub-network of a trained supernet: batch-norm recalibration, held-out accuracy.

Batch-norm statistics gathered while training many paths describe none of them; each candidate
gets fresh statistics from a few training batches before it is scored (as in SPOS and OFA).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def split_batch(batch: Any, input_key: str = "image", target_key: str = "label"
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, targets)`` from an ``(x, y, ...)`` tuple/list, a tensor, or a dict."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, Mapping):
        if input_key not in batch:
            raise ValueError(f"batch dict has keys {sorted(batch)} but no input key "
                             f"{input_key!r}; set input_key= to the key that holds the inputs")
        return batch[input_key], batch.get(target_key)
    raise ValueError(f"cannot find inputs in a batch of type {type(batch).__name__}; batches "
                     "must be tensors, (inputs, targets, ...) tuples/lists, or dicts")


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, forward: Callable[[torch.Tensor], Any],
                           inputs: Iterable[torch.Tensor]) -> None:
    """Replace the running statistics of ``model``'s batch norms by their exact average over
    ``inputs`` (fed through ``forward``, in training mode)."""
    norms = batch_norms(model)
    momenta = [bn.momentum for bn in norms]
    was_training = model.training
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    try:
        for x in inputs:
            forward(x)
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def top1_accuracy(forward: Callable[[torch.Tensor], torch.Tensor],
                  batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Fraction of ``(inputs, targets)`` pairs whose arg-max logit is the target."""
    correct = total = 0
    for x, y in batches:
        if y is None:
            raise ValueError("held-out batches carry no targets; accuracy needs them")
        logits = forward(x)
        correct += (logits.argmax(dim=-1) == y).sum().item()
        total += y.numel()
    if total == 0:
        raise ValueError("the held-out data is empty")
    return correct / total
