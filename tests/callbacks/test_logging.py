"""What OneShotNAS and its strategies log: to every logger of the Trainer, metrics that mean
what their names say."""

import random

import lightning.pytorch as pl
import pytest
import torch
from helpers import context_of_two_depths, make_trainer
from lightning.pytorch.loggers import Logger
from torch import nn

from nas_aug.callbacks import OneShotNAS
from nas_aug.classifier import ImageClassifier
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space
from nas_aug.space import Space, ValueChoice
from nas_aug.strategies import DARTS, GDAS, SPOS, ProxylessNAS, SearchContext

SPACE = dict(num_classes=10, in_chans=1, img_size=8, expand_ratios=(3, 6), kernel_sizes=(3, 5))


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call: (step, metrics)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    @property
    def name(self):
        return "memory"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))

    def values(self, key):
        return [metrics[key] for _, metrics in self.calls if key in metrics]


@pytest.fixture(scope="module")
def spos_fit():
    pl.seed_everything(0)
    supernet = create_space("mobilenet_tiny", **SPACE)
    nas = OneShotNAS(population_size=4, generations=1, calibration_batches=2, progress=False)
    loggers = [MemoryLogger(), MemoryLogger()]
    make_trainer([nas], max_epochs=2, logger=loggers).fit(
        ImageClassifier(supernet, channels_last=False), datamodule=DigitsDataModule())
    return nas, loggers


def test_the_search_result_reaches_every_logger(spos_fit):
    nas, loggers = spos_fit
    for logger in loggers:
        assert logger.values("nas/best_score") == [nas.result.score]
        assert logger.values("nas/best_macs") == [nas.result.chosen.macs]
        assert logger.values("nas/best_params") == [nas.result.chosen.params]
    assert loggers[0].calls == loggers[1].calls


def test_spos_logs_the_validated_largest_path_and_the_sampled_macs(spos_fit):
    nas, loggers = spos_fit
    table = nas.cost_table
    largest, smallest = (table(s).macs for s in (nas.space.largest(), nas.space.smallest()))
    for logger in loggers:
        # validation runs the largest path: its top-1 is the module's own val_acc
        epochs = [m for _, m in logger.calls if "nas/val_top1" in m]
        assert len(epochs) == 2
        for metrics in epochs:
            assert metrics["nas/val_top1"] == pytest.approx(metrics["val_acc"])
            assert metrics["nas/val_macs"] == largest
        sampled = logger.values("nas/sampled_macs_mean")
        assert len(sampled) == 2 and all(smallest <= v < largest for v in sampled)
        assert not [key for _, m in logger.calls for key in m if "temperature" in key]


def test_spos_sampled_macs_are_the_mean_of_the_epochs_paths():
    context = context_of_two_depths()
    spos = SPOS(sampling="sandwich", sandwich_random=1)
    spos.seed(3)
    spos.setup(context)
    spos.set_epoch(0, 2)
    assert spos.metrics() == {}
    for _ in range(3):
        spos.train_paths()
    rng, space = random.Random(3), context.space
    paths = [p for _ in range(3) for p in (space.largest(), space.smallest(), space.random(rng))]
    macs = [context.cost_table(p).macs for p in paths]
    assert spos.metrics() == {"sampled_macs_mean": sum(macs) / len(macs)}
    spos.set_epoch(1, 2)  # a new epoch starts its own mean
    assert spos.metrics() == {}


@pytest.mark.parametrize("strategy, has_temperature", [
    (DARTS(), False), (ProxylessNAS(), False), (GDAS(temperature=(4.0, 1.0)), True),
    (SPOS(), False)])
def test_only_a_strategy_with_a_temperature_logs_one(strategy, has_temperature):
    strategy.setup(SearchContext(nn.Identity(), Space([ValueChoice("k", [3, 5])])))
    strategy.set_epoch(1, 3)
    metrics = strategy.metrics()
    assert ("temperature" in metrics) == has_temperature
    if has_temperature:
        assert metrics["temperature"] == 2.5


def test_gradient_top_k_lists_distinct_networks_most_probable_first():
    context = context_of_two_depths()
    darts = DARTS()
    darts.setup(context)
    with torch.no_grad():  # depth 1 likely; b1.width (off at depth 1) near uniform
        for label, logits in {"depth": [2.0, 0.0], "b0.width": [0.0, 1.0],
                              "b1.width": [0.0, 0.1]}.items():
            darts.alpha.logits[label].copy_(torch.tensor(logits))
    scores = {2: 0.25, 4: 0.75}  # by b0.width
    result = darts.finish(scoring_of(lambda s: scores[s["b0.width"]], top_k=3))
    assert [c.sample for c in result.top] == [
        {"depth": 1, "b0.width": 4, "b1.width": 4},  # and not (1, 4, 2): the same network
        {"depth": 1, "b0.width": 2, "b1.width": 4},
        {"depth": 2, "b0.width": 4, "b1.width": 4}]
    probabilities = [c.probability for c in result.top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] == pytest.approx(0.8808 * 0.7311 * 0.5250, abs=1e-3)
    assert [c.score for c in result.top] == [0.75, 0.25, 0.75]
    assert result.chosen == result.top[0]


def scoring_of(evaluate, top_k):
    from nas_aug.strategies import Scoring

    return Scoring(evaluate=evaluate, top_k=top_k, progress=False)


def test_a_gradient_search_logs_the_chosen_architecture_as_the_most_probable(caplog):
    pl.seed_everything(0)
    nas = OneShotNAS(strategy="darts", lr=0.05, calibration_batches=2, progress=False, top_k=2)
    logger = MemoryLogger()
    with caplog.at_level("INFO"):
        make_trainer([nas], logger=logger).fit(
            ImageClassifier(create_space("mobilenet_tiny", **SPACE), channels_last=False),
            datamodule=DigitsDataModule())
    chosen = nas.result.chosen
    assert chosen.sample == nas.result.argmax == nas.result.top[0].sample
    line = next(r.getMessage() for r in caplog.records if "OneShotNAS: chose" in r.getMessage())
    assert line == (f"OneShotNAS: chose the most probable architecture (probability "
                    f"{chosen.probability:.3g}): held-out top-1 {chosen.score:.4f} at "
                    f"{chosen.cost}: {chosen.sample}")
    assert logger.values("nas/best_score") == [chosen.score]
    # the one validation, after the last outer step, ran the final arg-max of alpha
    assert len(logger.values("nas/val_top1")) == 1
    assert logger.values("nas/val_macs") == [nas.cost_table(nas.result.argmax).macs]
