"""Architecture parameters and the DARTS / GDAS outer step, on hand-made losses."""

import copy
import itertools
import math

import pytest
import torch

from nas_aug.space import Space, ValueChoice
from nas_aug.strategies import SearchContext, get_strategy
from nas_aug.strategies.differentiable import ArchitectureParameters, gumbel_hard
from nas_aug.strategies.gradient import ArchitectureStep

SPACE = Space([ValueChoice("op", [0, 1, 2]), ValueChoice("stage.width", [8, 16])])


def gradient_strategy(space, method="darts", seed=0, **options):
    """The strategy ``method`` set up on ``space`` (no supernet: the losses are hand-made)."""
    nas = get_strategy(method, **options)
    nas.seed(seed)
    nas.setup(SearchContext(torch.nn.Identity(), space))
    return nas


def _favouring(candidate, strength=1.0):
    """A held-out loss that falls as the mixing weight of ``op=candidate`` grows."""
    return lambda mixture: (-strength * mixture.weights["op"][candidate]
                            + 0 * mixture.weights["stage.width"].sum())


def _steps(nas, loss, count, **step):
    for _ in range(count):
        nas.architecture_step(ArchitectureStep(heldout_loss=loss, train_loss=loss, weights=[],
                                               lr=0.1, **step))


@pytest.mark.parametrize("method", ["darts", "gdas", "proxyless"])
def test_outer_steps_follow_the_heldout_loss(method):
    nas = gradient_strategy(SPACE, method, lr=0.05, beta_decay=0.0)
    _steps(nas, _favouring(2), 40)
    assert nas.alpha.argmax()["op"] == 2
    assert nas.updates == 40
    assert all(p.grad is None for p in nas.alpha.parameters())


def test_beta_decay_keeps_the_distribution_from_collapsing():
    """The remedy acting: the same pull towards one candidate saturates without it and is
    held back with it, and it leaves the ranking alone."""
    plain = gradient_strategy(SPACE, "darts", lr=0.05, beta_decay=0.0)
    remedied = gradient_strategy(SPACE, "darts", lr=0.05, beta_decay=0.5)
    for nas in (plain, remedied):
        _steps(nas, _favouring(2, strength=0.2), 200)
    p_plain, p_remedied = plain.alpha.probabilities()["op"], remedied.alpha.probabilities()["op"]
    assert p_plain[2] > 0.95  # collapsed onto one candidate
    assert 0.4 < p_remedied[2] < 0.9 and p_remedied.argmax() == 2
    assert remedied.alpha.entropy()["op"] > plain.alpha.entropy()["op"] + 0.3


def test_beta_decay_has_no_gradient_at_uniform_and_is_shift_invariant():
    alpha = ArchitectureParameters(SPACE)
    grad = torch.autograd.grad(alpha.beta_decay(), list(alpha.parameters()))
    assert all(g.abs().max() < 1e-7 for g in grad)
    with torch.no_grad():
        alpha.logits["op"].copy_(torch.tensor([0.0, 1.0, 3.0]))
    before = alpha.beta_decay().item()
    with torch.no_grad():
        alpha.logits["op"].add_(5.0)
    assert alpha.beta_decay().item() == pytest.approx(before)
    p = torch.softmax(torch.tensor([0.0, 1.0, 3.0]), 0)
    kl_uniform = float((torch.full((3,), 1 / 3) * torch.log(torch.full((3,), 1 / 3) / p)).sum())
    assert before == pytest.approx(kl_uniform + math.log(3) + math.log(2))  # + width's log 2


def test_budget_penalty_pulls_the_expected_cost_under_the_limit():
    costs = {0: 10.0, 1: 20.0, 2: 40.0}

    def expected_cost(probabilities):
        macs = sum(p * costs[i] for i, p in enumerate(probabilities["op"]))
        return macs, torch.tensor(0.0)

    nas = gradient_strategy(SPACE, "darts", lr=0.05, beta_decay=0.0, cost_weight=1.0)
    _steps(nas, _favouring(2, strength=0.01), 150, expected_cost=expected_cost,
           limits=(15.0, None))
    p = nas.alpha.probabilities()["op"]
    assert float(sum(p[i] * costs[i] for i in range(3))) < 17.0
    assert nas.last_losses["overshoot"] < 0.15


def test_second_order_steps_use_the_unrolled_hypergradient():
    w = torch.nn.Parameter(torch.tensor([0.3]))

    def train(mixture):  # alpha enters the training loss only: first order sees nothing
        weights = mixture.weights
        return ((w - 2.0 * weights["op"][0]) ** 2).sum() + 0 * weights["stage.width"].sum()

    def heldout(mixture):
        return ((w - 1.0) ** 2).sum() + 0 * mixture.weights["op"].sum()

    first = gradient_strategy(SPACE, "darts", order=1, beta_decay=0.0, weight_decay=0.0)
    second = gradient_strategy(SPACE, "darts", order=2, beta_decay=0.0, weight_decay=0.0)
    for nas in (first, second):
        nas.architecture_step(ArchitectureStep(heldout, train, [w], lr=0.1))
    assert all(torch.equal(p, torch.zeros_like(p)) for p in first.alpha.parameters())
    assert second.alpha.logits["op"].abs().sum() > 0
    assert torch.equal(w, torch.tensor([0.3]))  # the weights left as they were


def test_gdas_draws_one_hot_weights_with_gradients():
    logits = torch.zeros(4, requires_grad=True)
    generator = torch.Generator().manual_seed(0)
    draws = [gumbel_hard(logits, 1.0, generator) for _ in range(40)]
    assert all(sorted(d.detach().tolist()) == [0, 0, 0, 1] for d in draws)
    assert len({int(d.argmax()) for d in draws}) == 4
    (draws[0] * torch.arange(4.0)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_gdas_temperature_anneals_linearly():
    nas = gradient_strategy(SPACE, "gdas", temperature=(5.0, 1.0))
    temperatures = []
    for epoch in range(5):
        nas.set_epoch(epoch, 5)
        temperatures.append(nas.temperature)
    assert temperatures == [5.0, 4.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize("method", ["darts", "gdas", "proxyless"])
def test_state_round_trip_continues_exactly(method):
    first = gradient_strategy(SPACE, method, lr=0.05)
    _steps(first, _favouring(1), 3)
    second = gradient_strategy(SPACE, method, lr=0.05, seed=7)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    for nas in (first, second):
        _steps(nas, _favouring(1), 3)
    for a, b in zip(first.alpha.parameters(), second.alpha.parameters()):
        assert torch.equal(a, b)
    assert first.train_mixing().weights["op"].tolist() == \
        second.train_mixing().weights["op"].tolist()


def test_top_k_is_exact_and_respects_the_constraint():
    alpha = ArchitectureParameters(SPACE)
    with torch.no_grad():
        alpha.logits["op"].copy_(torch.tensor([0.2, 1.5, -0.3]))
        alpha.logits["stage.width"].copy_(torch.tensor([0.4, 0.1]))
    everything = [dict(zip(SPACE.labels, values)) for values in
                  itertools.product(*(SPACE.candidates(label) for label in SPACE.labels))]
    by_probability = sorted(everything, key=alpha.log_probability, reverse=True)
    assert [s for s, _ in alpha.top_k(6)] == by_probability
    allowed = [s for s in by_probability if s["stage.width"] == 16]
    assert [s for s, _ in alpha.top_k(2, lambda s: s["stage.width"] == 16)] == allowed[:2]
    assert alpha.top_k(1)[0][1] == pytest.approx(alpha.log_probability(by_probability[0]))
    assert alpha.argmax() == by_probability[0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="enas"), "unknown strategy 'enas'"),
    (dict(order=3), "order must be 1"),
    (dict(lr=0), "lr must be a positive number"),
    (dict(beta_decay=-1), "beta_decay must be a non-negative number"),
    (dict(method="gdas", temperature=1.0), r"temperature must be a \(start, end\) pair"),
    (dict(method="gdas", temperature=(1.0, 0.0)), "temperature must be a positive number"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gradient_strategy(SPACE, **kwargs)


def test_proxyless_steps_compute_two_paths_and_train_one():
    nas = gradient_strategy(SPACE, "proxyless", seed=3)
    weight_step = nas.train_mixing()
    assert weight_step.support == {}
    assert all(sorted(w.tolist())[-1] == 1.0 and w.sum() == 1.0
               for w in weight_step.weights.values())
    arch_step = nas._mixing(nas.generator, two_paths=True)
    for label, weights in arch_step.weights.items():
        pair = arch_step.support[label]
        assert len(set(pair)) == 2
        assert weights.detach().sum() == 1.0 and weights.detach()[list(pair)].sum() == 1.0


def test_proxyless_gradient_is_the_binary_gate_estimator():
    """dL/dalpha_k = sum_m dL/dg_m p_m (delta_mk - p_k) over the sampled pair (ProxylessNAS),
    zero for the candidate left out."""
    nas = gradient_strategy(SPACE, "proxyless", seed=0, beta_decay=0.0, weight_decay=0.0)
    with torch.no_grad():
        nas.alpha.logits["op"].copy_(torch.tensor([0.3, -0.2, 0.5]))
    slopes = torch.tensor([1.5, -2.0, 0.7])  # dL/dg_m for each candidate

    mixture = nas._mixing(torch.Generator().manual_seed(1), two_paths=True)
    loss = (mixture.weights["op"] * slopes).sum()
    grad = torch.autograd.grad(loss, nas.alpha.logits["op"])[0]
    pair = list(mixture.support["op"])
    p = torch.softmax(nas.alpha.logits["op"].detach()[pair], 0)
    expected = torch.zeros(3)
    for k_pos, k in enumerate(pair):
        expected[k] = sum(slopes[m] * p[m_pos] * (float(m_pos == k_pos) - p[k_pos])
                          for m_pos, m in enumerate(pair))
    torch.testing.assert_close(grad, expected)
    left_out = ({0, 1, 2} - set(pair)).pop()
    assert grad[left_out] == 0


def test_multiplicative_cost_form_scales_the_heldout_loss():
    costs = torch.tensor([10.0, 20.0, 40.0])

    def expected_cost(probabilities):
        return (probabilities["op"] * costs).sum(), torch.tensor(1.0)

    nas = gradient_strategy(SPACE, "darts", lr=0.05, beta_decay=0.0, cost_form="multiplicative",
                      cost_exponent=2.0)
    flat = lambda mixture: 1.0 + 0 * mixture.weights["op"].sum()  # noqa: E731
    _steps(nas, flat, 60, expected_cost=expected_cost, limits=(20.0, None))
    # only the factor (log E[MACs] / log 20) ** 2 depends on alpha: the cheapest wins
    assert nas.alpha.argmax()["op"] == 0
    assert nas.last_losses["cost_factor"] < 1.0
