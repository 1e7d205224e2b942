"""The outer step of a bi-level search, in plain torch: hypergradients through one virtual step.

The outer variables ``alpha`` (a policy, architecture weights) are chosen to lower the held-out
loss of the weights that training would produce, ``L_val(w - lr * grad_w L_train(w, alpha))``.
When ``alpha`` only enters the training loss (an augmentation policy), the first-order
approximation gives no signal at all, so :func:`unrolled_hypergradient` uses DARTS's second
order form (Liu et al. 2019, eq. 7-8): one virtual SGD step, then a finite-difference
Hessian-vector product,

    grad_alpha = dL_val/dalpha - lr * (grad_alpha L_train(w+) - grad_alpha L_train(w-)) / (2 eps)

with ``w+- = w +- eps * grad_w' L_val(w')`` and ``eps = 0.01 / |grad_w' L_val(w')|``.

>>> import torch
>>> w, alpha = torch.nn.Parameter(torch.tensor([1.0])), torch.tensor([2.0], requires_grad=True)
>>> train = lambda: ((w - alpha) ** 2).sum()   # w* follows alpha
>>> heldout = lambda: ((w - 3.0) ** 2).sum()   # the held-out optimum is w = 3
>>> grad, = unrolled_hypergradient(train, heldout, [w], [alpha], lr=0.1)
>>> round(grad.item(), 3)  # w' = w - 0.2 (w - alpha); dL_val/dalpha = 2 (w' - 3) * 0.2
-0.72
>>> w.item()  # the weights are left as they were
1.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["OuterOptimizer", "OuterStep", "gradients", "lookahead_hypergradient",
           "preserved_buffers", "unrolled_hypergradient"]


@dataclass(frozen=True)
class OuterStep:
    """What an outer variable (architecture, policy) gets from the fit at one training step.

    ``images`` are the step's training inputs (before augmentation, for a policy search);
    ``train_loss(images=None)`` is the user's loss on the step's training batch, with
    ``images`` in place of its inputs if given (the same randomness on every call);
    ``heldout_loss()`` the user's loss on the step's held-out batch; ``weights`` the model's
    trainable weights; ``lr`` the learning rate of a virtual step; ``step`` the fit's global
    step; ``reduce`` averages a tensor over the fit's processes (``None`` on one process).
    """

    images: Tensor
    train_loss: Callable[..., Tensor]
    heldout_loss: Callable[[], Tensor]
    weights: Sequence[Tensor]
    lr: float
    step: int
    reduce: Callable[[Tensor], Tensor] | None = None


class OuterOptimizer:
    """Adam on the parameters of ``variables`` (an architecture's ``alpha``, a policy), kept
    apart from the user's optimizer: betas (0.5, 0.999) as DARTS and DADA use them.

    >>> alpha = nn.Linear(2, 1)
    >>> outer = OuterOptimizer(alpha, lr=0.1)
    >>> outer.step([torch.ones(1, 2), torch.ones(1)])
    >>> all(p.grad is None for p in alpha.parameters())
    True
    """

    def __init__(self, variables: nn.Module, lr: float, weight_decay: float = 0.0):
        self.variables, self.lr, self.weight_decay = variables, lr, weight_decay
        self.optimizer = self._new()

    def _new(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.variables.parameters(), lr=self.lr, betas=(0.5, 0.999),
                                weight_decay=self.weight_decay)

    def to(self, device: torch.device) -> None:
        """Move the variables and Adam's moments to ``device``."""
        state = self.optimizer.state_dict()
        self.variables.to(device)
        self.load_state_dict(state)

    def step(self, grads: Sequence[Tensor]) -> None:
        """One Adam step along ``grads`` (one per parameter, in order); no gradient stays."""
        for parameter, grad in zip(self.variables.parameters(), grads):
            parameter.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer = self._new()  # on the variables' device: load_state_dict moves state
        self.optimizer.load_state_dict(state)


def gradients(loss: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """``d loss / d tensor`` for each tensor, zeros where the loss does not depend on it."""
    grads = torch.autograd.grad(loss, list(tensors), allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


@contextlib.contextmanager
def preserved_buffers(module: nn.Module) -> Iterator[None]:
    """Restore ``module``'s buffers (batch-norm running statistics, ...) on exit, so extra
    forward passes of an outer step leave no trace in the model."""
    saved = [(buffer, buffer.detach().clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _add_(tensors: Sequence[Tensor], deltas: Sequence[Tensor], scale: float) -> None:
    with torch.no_grad():
        torch._foreach_add_(list(tensors), list(deltas), alpha=scale)


def unrolled_hypergradient(train_loss: Callable[[], Tensor], heldout_loss: Callable[[], Tensor],
                           weights: Sequence[Tensor], outer: Sequence[Tensor], lr: float,
                           eps_scale: float = 0.01) -> list[Tensor]:
    """The gradient of the held-out loss after one virtual SGD step (learning rate ``lr``) with
    respect to ``outer``, by DARTS's finite-difference Hessian-vector product.

    ``train_loss`` is called three times and must draw the same randomness each time (the
    same augmentation, the same batch); the weights are restored bit for bit on return.
    Costs four forward-backward passes.
    """
    weights, outer = list(weights), list(outer)
    with _restored(weights) as original:
        _add_(weights, gradients(train_loss(), weights), -lr)  # w' = w - lr * grad_w L_train
        return _finite_difference(train_loss, heldout_loss, weights, outer, lr, original,
                                  eps_scale)


def lookahead_hypergradient(train_loss: Callable[[], Tensor], heldout_loss: Callable[[], Tensor],
                            weights: Sequence[Tensor], outer: Sequence[Tensor], lr: float,
                            eps_scale: float = 0.01) -> list[Tensor]:
    """:func:`unrolled_hypergradient` with the held-out gradient taken at the current weights
    instead of after the virtual step: ``dL_val/dalpha - lr * d/dalpha <grad_w L_val(w),
    grad_w L_train(w, alpha)>``, the one-step lookahead to first order in ``lr``. It skips the
    virtual step: three forward-backward passes instead of four, two of ``train_loss``.

    >>> w, alpha = torch.nn.Parameter(torch.tensor([1.0])), torch.tensor([2.0], requires_grad=True)
    >>> grad, = lookahead_hypergradient(lambda: ((w - alpha) ** 2).sum(),
    ...                                 lambda: ((w - 3.0) ** 2).sum(), [w], [alpha], lr=0.1)
    >>> round(grad.item(), 3)  # -lr * d/dalpha (2 (w - 3) * 2 (w - alpha)) = -0.1 * 4 * 2
    -0.8
    """
    weights, outer = list(weights), list(outer)
    with _restored(weights) as original:
        return _finite_difference(train_loss, heldout_loss, weights, outer, lr, original,
                                  eps_scale)


@contextlib.contextmanager
def _restored(weights: list[Tensor]) -> Iterator[list[Tensor]]:
    """Yield a copy of ``weights``, and put it back in them bit for bit on exit."""
    original = [w.detach().clone() for w in weights]
    try:
        yield original
    finally:
        with torch.no_grad():
            torch._foreach_copy_(weights, original)


def _finite_difference(train_loss: Callable[[], Tensor], heldout_loss: Callable[[], Tensor],
                      weights: list[Tensor], outer: list[Tensor], lr: float,
                      original: list[Tensor], eps_scale: float) -> list[Tensor]:
    """The held-out gradient at the weights as they are, then ``dL_val/dalpha - lr * H v``
    with ``H v = (grad_alpha L_train(w0 + eps v) - grad_alpha L_train(w0 - eps v)) / (2 eps)``
    around ``original`` (``w0``), ``v`` the held-out gradient in the weights and
    ``eps = eps_scale / |v|``. Leaves the weights perturbed: the caller restores them."""
    heldout_grads = gradients(heldout_loss(), weights + outer)
    direction, direct = heldout_grads[:len(weights)], heldout_grads[len(weights):]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d)
                                                 for d in direction]))
    if not torch.isfinite(norm) or norm.item() == 0.0:
        return direct
    eps = eps_scale / norm.item()
    with torch.no_grad():
        torch._foreach_copy_(weights, original)
    _add_(weights, direction, eps)
    plus = gradients(train_loss(), outer)
    _add_(weights, direction, -2 * eps)
    minus = gradients(train_loss(), outer)
    return [d - lr * (p - m) / (2 * eps) for d, p, m in zip(direct, plus, minus)]
