"""Latency measured on a device: the forward time of a module, with warm-up and repeats.

>>> import torch
>>> ms = forward_ms(torch.nn.Linear(8, 8), torch.zeros(1, 8), warmup=1, repeats=3)
>>> ms > 0
True
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..validation import check_int

__all__ = ["forward_ms"]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_ms(module: nn.Module, inputs: torch.Tensor, warmup: int = 3,
               repeats: int = 10) -> float:
    """The median wall time of ``module(inputs)`` in milliseconds over ``repeats`` runs after
    ``warmup`` runs, in eval mode, synchronising the device (CUDA) around each run."""
    check_int("warmup", warmup, 0)
    check_int("repeats", repeats, 1)
    was_training = module.training
    module.eval()
    try:
        for _ in range(warmup):
            module(inputs)
        times = []
        for _ in range(repeats):
            _synchronize(inputs.device)
            started = time.perf_counter()
            module(inputs)
            _synchronize(inputs.device)
            times.append(time.perf_counter() - started)
    finally:
        module.train(was_training)
    return statistics.median(times) * 1e3
