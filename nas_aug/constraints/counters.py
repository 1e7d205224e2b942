"""MAC counters behind one small interface: ``counter(module, example_input) -> int``.

Units, said once for the whole project: a **MAC** is one multiply-add. fvcore counts MACs and
calls them "flops", as papers do when they report FLOPs (MobileNetV3-Large: 225M at 224px).
``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add; :class:`TorchCounter` halves it.
"""

from __future__ import annotations

import warnings
from typing import Protocol

import torch
from torch import nn

from ..registry import Registry


class MacCounter(Protocol):
    """Counts the multiply-adds of one forward pass of ``module`` on ``example_input``."""

    name: str

    def __call__(self, module: nn.Module, example_input: torch.Tensor) -> int: ...


def _eval_no_grad(fn):
    def wrapped(self, module: nn.Module, example_input: torch.Tensor) -> int:
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                return int(fn(self, module, example_input))
        finally:
            module.train(was_training)

    return wrapped


class FvcoreCounter:
    """fvcore's count (conv, linear, matmul, normalisation, pooling...), batch norm in eval mode.

    >>> FvcoreCounter()(nn.Linear(8, 4), torch.zeros(1, 8))
    32
    """

    name = "fvcore"

    @_eval_no_grad
    def __call__(self, module, example_input):
        with warnings.catch_warnings():  # fvcore traces with TorchScript, which torch deprecates
            warnings.simplefilter("ignore", FutureWarning)
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(module, example_input)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return analysis.total()


class TorchCounter:
    """``torch.utils.flop_counter`` (matmul-like ops only), converted to MACs.

    >>> TorchCounter()(nn.Linear(8, 4), torch.zeros(1, 8))
    32
    """

    name = "torch"

    @_eval_no_grad
    def __call__(self, module, example_input):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as mode:
            module(example_input)
        return mode.get_total_flops() // 2


COUNTERS: Registry[type[MacCounter]] = Registry("MAC counter")
COUNTERS.add("fvcore", FvcoreCounter)
COUNTERS.add("torch", TorchCounter)


def get_counter(name: str) -> MacCounter:
    """The counter registered as ``name`` (``"fvcore"`` or ``"torch"``)."""
    return COUNTERS.get(name)()


def count_params(module: nn.Module) -> int:
    """Number of parameters (buffers such as batch-norm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())
