"""Latency tables: per-unit times summed per sample, and latency budgets in a fit."""

import random

import lightning.pytorch as pl
import pytest
import torch
from helpers import SMALL_SPACES, LitClassifier, make_trainer
from torch import nn

from nas_aug import Budget, load_architecture
from nas_aug.callbacks import OneShotNAS
from nas_aug.constraints import Cost, CostTable, count_params
from nas_aug.constraints import cost_table as cost_table_module
from nas_aug.constraints.latency import forward_ms
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space
from nas_aug.space import LayerChoice

SPACE = SMALL_SPACES["mobilenet_tiny"]


def params_as_ms(module, inputs):
    """A deterministic stand-in for a timer: one millisecond per thousand parameters, which
    adds up over units exactly as parameters do."""
    return count_params(module) / 1000


@pytest.fixture(scope="module")
def timed():
    net = create_space("mobilenet_tiny", **SPACE)
    table = CostTable.build(net, (1, 8, 8))
    table.measure_latency(net, measure=params_as_ms)
    return table


def test_a_sample_latency_is_the_sum_of_its_units(timed):
    rng = random.Random(0)
    for sample in [timed.space.largest(), timed.space.smallest()] + [
            timed.space.random(rng) for _ in range(10)]:
        cost = timed(sample)
        assert cost.latency_ms == pytest.approx(cost.params / 1000)
    assert timed.latency_device == "cpu"
    for check in timed.latency_check:  # whole sub-networks timed by the same stand-in
        assert check["table_ms"] == pytest.approx(check["measured_ms"])


def test_expected_latency_is_exact_and_differentiable(timed):
    logits = {label: torch.randn(len(timed.space.candidates(label)), requires_grad=True)
              for label in timed.space.labels}
    probabilities = {label: torch.softmax(v, 0) for label, v in logits.items()}
    latency = timed.expected_latency(probabilities)
    _, params = timed.expected(probabilities)
    assert latency.item() == pytest.approx(params.item() / 1000)
    latency.backward()
    assert any(v.grad.abs().sum() > 0 for v in logits.values())


def test_layer_choice_candidates_are_timed_each():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), LayerChoice("op", [
        nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Identity()]))
    table = CostTable.build(net, (1, 6, 6), max_combinations=1)
    table.measure_latency(net, measure=params_as_ms)
    for op, params in ((0, 4 * 4 * 9 + 4), (1, 4 * 4 + 4), (2, 0)):
        assert table({"op": op}).latency_ms == pytest.approx((40 + params) / 1000)


def test_expected_latency_needs_a_measurement():
    net = create_space("mobilenet_tiny", **SPACE)
    table = CostTable.build(net, (1, 8, 8))
    with pytest.raises(ValueError, match="no latency yet: call measure_latency"):
        table.expected_latency({label: torch.ones(len(table.space.candidates(label)))
                                for label in table.space.labels})
    assert table(table.space.largest()).latency_ms is None


def test_real_timing_is_positive_and_close_to_whole_networks():
    net = create_space("mobilenet_tiny", **SPACE)
    table = CostTable.build(net, (1, 8, 8))
    table.measure_latency(net, warmup=1, repeats=3)
    assert 0 < table(table.space.smallest()).latency_ms < table(table.space.largest()).latency_ms
    assert all(c["measured_ms"] > 0 for c in table.latency_check)
    assert forward_ms(torch.nn.Identity(), torch.zeros(1), warmup=0, repeats=1) >= 0


def test_budget_latency_limits():
    assert not Budget(latency_ms=1.0).allows(Cost(1, 1, latency_ms=2.0))
    assert Budget(macs=10, latency_ms=1.0).allows(Cost(5, 1, latency_ms=0.5))
    with pytest.raises(ValueError, match="limits latency but this cost has none measured"):
        Budget(latency_ms=1.0).allows(Cost(1, 1))
    with pytest.raises(ValueError, match="latency_ms=-1 must be a positive number"):
        Budget(latency_ms=-1)
    assert str(Budget(latency_ms=2.5)) == "Budget(latency<=2.5 ms)"


@pytest.mark.parametrize("strategy", ["spos", "darts"])
def test_a_latency_budget_is_measured_on_the_fit_device_and_met(strategy, timed, tmp_path,
                                                               monkeypatch):
    monkeypatch.setattr(cost_table_module, "forward_ms",
                        lambda module, inputs, warmup, repeats: params_as_ms(module, inputs))
    largest, smallest = (timed(timed.space.largest()).latency_ms,
                         timed(timed.space.smallest()).latency_ms)
    budget = Budget(latency_ms=(largest + smallest) / 2)
    options = dict(population_size=4, generations=2) if strategy == "spos" else dict(lr=0.05)
    nas = OneShotNAS(strategy=strategy, budget=budget, export_dir=tmp_path, progress=False,
                     calibration_batches=2, **options)
    pl.seed_everything(0)
    make_trainer([nas]).fit(LitClassifier(create_space("mobilenet_tiny", **SPACE)),
                            datamodule=DigitsDataModule())
    assert nas.cost_table.latency_device == "cpu"
    assert nas.result.chosen.latency_ms <= budget.latency_ms
    arch = load_architecture(tmp_path)
    assert arch.latency_ms == nas.result.chosen.latency_ms
    assert arch.budget["latency_ms"] == budget.latency_ms


def test_a_latency_budget_below_the_smallest_fails_before_training(timed, monkeypatch):
    monkeypatch.setattr(cost_table_module, "forward_ms",
                        lambda module, inputs, warmup, repeats: params_as_ms(module, inputs))
    smallest = timed(timed.space.smallest()).latency_ms
    trainer = make_trainer([OneShotNAS(budget=Budget(latency_ms=smallest / 2), progress=False)])
    with pytest.raises(ValueError, match="below the smallest sub-network"):
        trainer.fit(LitClassifier(create_space("mobilenet_tiny", **SPACE)),
                    datamodule=DigitsDataModule())
    assert trainer.global_step == 0
