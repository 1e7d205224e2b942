"""The outer step's hypergradient against autograd through an explicit unrolled step."""

import pytest
import torch
from torch import nn

from nas_aug.bilevel import (
    gradients,
    lookahead_hypergradient,
    preserved_buffers,
    unrolled_hypergradient,
)


def _problem(seed):
    """A small nonlinear regression whose training loss depends on alpha (input weights) and
    whose held-out loss does not: the augmentation case, where only the unrolled term acts."""
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)
    xv, yv = torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    torch.manual_seed(seed)
    for p in net.parameters():
        nn.init.normal_(p, std=0.5)
    alpha = torch.randn(4, generator=generator).requires_grad_()
    return net, alpha, (x, y), (xv, yv)


def _train_loss(net, alpha, x, y, params=None):
    out = torch.func.functional_call(net, params, (x * alpha,)) if params else net(x * alpha)
    return ((out - y) ** 2).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_autograd_through_one_unrolled_step(seed):
    net, alpha, (x, y), (xv, yv) = _problem(seed)
    names, weights = zip(*net.named_parameters())
    lr = 0.1
    # exact: differentiate through w' = w - lr * grad_w L_train(w, alpha)
    grads = torch.autograd.grad(_train_loss(net, alpha, x, y), weights, create_graph=True)
    unrolled = {n: w - lr * g for n, w, g in zip(names, weights, grads)}
    heldout = ((torch.func.functional_call(net, unrolled, (xv,)) - yv) ** 2).mean()
    exact, = torch.autograd.grad(heldout, alpha)

    before = [w.detach().clone() for w in weights]
    approx, = unrolled_hypergradient(lambda: _train_loss(net, alpha, x, y),
                                     lambda: ((net(xv) - yv) ** 2).mean(), weights, [alpha], lr)
    torch.testing.assert_close(approx, exact, rtol=2e-3, atol=1e-5)
    assert exact.abs().min() > 1e-4  # a real signal, not zeros on both sides
    for w, b in zip(weights, before):
        assert torch.equal(w, b)  # restored bit for bit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookahead_matches_autograd_of_the_first_order_form(seed):
    net, alpha, (x, y), (xv, yv) = _problem(seed)
    weights = list(net.parameters())
    lr = 0.1
    # exact: -lr * d/dalpha <grad_w L_val(w), grad_w L_train(w, alpha)>, by double backward
    heldout = [g.detach() for g in torch.autograd.grad(((net(xv) - yv) ** 2).mean(), weights)]
    train = torch.autograd.grad(_train_loss(net, alpha, x, y), weights, create_graph=True)
    exact, = torch.autograd.grad(-lr * sum((h * t).sum() for h, t in zip(heldout, train)),
                                 alpha)
    before = [w.detach().clone() for w in weights]
    calls = []

    def train_loss():
        calls.append(1)
        return _train_loss(net, alpha, x, y)

    approx, = lookahead_hypergradient(train_loss, lambda: ((net(xv) - yv) ** 2).mean(),
                                      weights, [alpha], lr)
    torch.testing.assert_close(approx, exact, rtol=2e-3, atol=1e-5)
    assert exact.abs().min() > 1e-4 and len(calls) == 2  # no virtual step
    for w, b in zip(weights, before):
        assert torch.equal(w, b)
    # and it is the unrolled hypergradient to first order in lr
    unrolled, = unrolled_hypergradient(lambda: _train_loss(net, alpha, x, y),
                                       lambda: ((net(xv) - yv) ** 2).mean(), weights, [alpha],
                                       1e-3)
    small, = lookahead_hypergradient(lambda: _train_loss(net, alpha, x, y),
                                     lambda: ((net(xv) - yv) ** 2).mean(), weights, [alpha],
                                     1e-3)
    torch.testing.assert_close(small, unrolled, rtol=2e-2, atol=1e-7)


def test_direct_dependence_of_the_heldout_loss_is_kept():
    w = nn.Parameter(torch.tensor([0.5]))
    alpha = torch.tensor([2.0], requires_grad=True)
    # the held-out loss depends on alpha directly (architecture weights do), the training not
    grad, = unrolled_hypergradient(lambda: (w ** 2).sum(), lambda: (w * alpha).sum(), [w], [alpha],
                                   lr=0.1)
    assert grad.item() == pytest.approx(0.4)  # d(w' alpha)/dalpha = w' = w - lr * 2w


def test_a_flat_heldout_loss_gives_the_direct_gradient_only():
    w = nn.Parameter(torch.tensor([1.0]))
    alpha = torch.tensor([3.0], requires_grad=True)
    grad, = unrolled_hypergradient(lambda: ((w - alpha) ** 2).sum(), lambda: alpha.sum() * 0 + 1.0,
                                   [w], [alpha], lr=0.1)
    assert grad.item() == 0.0


def test_gradients_fill_zeros_for_unused_tensors():
    a, b = torch.tensor(2.0, requires_grad=True), torch.tensor(5.0, requires_grad=True)
    assert [g.item() for g in gradients(a * 3, [a, b])] == [3.0, 0.0]


def test_preserved_buffers_restores_batch_norm_statistics():
    bn = nn.BatchNorm1d(3)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with preserved_buffers(bn):
        bn(torch.randn(8, 3) + 5)
        assert not torch.equal(bn.running_mean, before["running_mean"])
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
