"""OneShotNAS with gradient strategies (DARTS, GDAS) inside an ordinary fit."""

import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers import LitClassifier, make_trainer, midway_budget
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from nas_aug import Budget, load_architecture
from nas_aug.callbacks import OneShotNAS
from nas_aug.constraints import CostTable
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space
from nas_aug.space import LayerChoice
from nas_aug.supernet import SupernetInfo, mark_supernet

SPACE = dict(num_classes=10, in_chans=1, img_size=8, expand_ratios=(3, 6), kernel_sizes=(3, 5))
FAST = dict(calibration_batches=2, progress=False, top_k=3)


@pytest.fixture(scope="module")
def costs():
    return CostTable.build(create_space("mobilenet_tiny", **SPACE), (1, 8, 8))


@pytest.mark.parametrize("strategy", ["darts", "gdas", "proxyless"])
def test_each_strategy_searches_exports_and_keeps_alpha_to_itself(strategy, tmp_path, costs):
    pl.seed_everything(0)
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    budget = midway_budget(costs)
    nas = OneShotNAS(strategy=strategy, budget=budget, export_dir=tmp_path, lr=0.05, **FAST)
    trainer = make_trainer([nas], max_epochs=2,
                           logger=CSVLogger(tmp_path / "logs", name="", version=0))
    trainer.fit(model, datamodule=DigitsDataModule())

    assert nas.strategy.updates == 8  # one outer step per training step
    assert any(p.detach().abs().sum() > 0 for p in nas_alpha(nas))  # alpha starts at zero
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    assert not optimized & {id(p) for p in nas.strategy.alpha.parameters()}

    arch = load_architecture(tmp_path)
    assert arch.strategy == strategy and arch.sample == nas.result.sample
    assert arch.macs <= budget.macs and arch.macs == costs(arch.sample).macs
    assert set(arch.probabilities) == set(costs.space.labels)
    assert len(arch.top) == 3 and all(c["macs"] <= budget.macs for c in arch.top)
    assert [c["probability"] for c in arch.top] == sorted(
        (c["probability"] for c in arch.top), reverse=True)
    # the derived architecture is left active, with the mixing turned off
    assert all(m.mixing is None for m in model.modules() if hasattr(m, "mixing"))
    # the distributions and their entropy reach the user's logger every epoch
    metrics = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "nas/entropy_mean" in metrics and "nas/p/stage0.depth=1" in metrics


def nas_alpha(nas):
    return list(nas.strategy.alpha.parameters())


class ForceLargest(pl.Callback):
    """Before OneShotNAS derives its result, make the largest architecture the most probable."""

    def __init__(self, nas):
        self.nas = nas

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            for label in self.nas.space.labels:
                logits = self.nas.strategy.alpha.logits[label]
                logits.copy_(torch.arange(len(logits), dtype=logits.dtype) * 5.0)


def test_an_argmax_over_budget_exports_the_most_probable_feasible_one(tmp_path, costs):
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    budget = midway_budget(costs)
    nas = OneShotNAS(strategy="darts", budget=budget, export_dir=tmp_path, **FAST)
    with pytest.warns(UserWarning, match="arg-max architecture costs .* over Budget"):
        make_trainer([ForceLargest(nas), nas]).fit(model, datamodule=DigitsDataModule())
    assert nas.result.argmax == costs.space.largest()
    arch = load_architecture(tmp_path)
    assert arch.macs <= budget.macs and "most probable one within the budget" in arch.note
    feasible = [s for s, _ in nas.strategy.alpha.top_k(1, lambda s: budget.allows(costs(s)))]
    assert arch.sample == feasible[0]


@pytest.mark.parametrize("strategy", ["darts", "gdas"])
def test_resumed_fit_continues_the_architecture_search_exactly(strategy, tmp_path):
    def fit(max_epochs, ckpt_path=None, checkpoint=None):
        pl.seed_everything(0)
        model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
        nas = OneShotNAS(strategy=strategy, lr=0.05, **FAST)
        trainer = pl.Trainer(max_epochs=max_epochs, limit_train_batches=3, limit_val_batches=2,
                             callbacks=[nas] + ([checkpoint] if checkpoint else []),
                             logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=bool(checkpoint), default_root_dir=tmp_path)
        trainer.fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
        return nas, model

    straight, model_a = fit(2)
    fit(1, checkpoint=ModelCheckpoint(dirpath=tmp_path, filename="epoch1"))
    resumed, model_b = fit(2, ckpt_path=tmp_path / "epoch1.ckpt")
    assert resumed.strategy.updates == straight.strategy.updates == 6
    if strategy == "gdas":  # only GDAS anneals a temperature
        assert resumed.strategy.temperature == straight.strategy.temperature
    assert torch.equal(resumed.strategy.generator.get_state(),
                       straight.strategy.generator.get_state())
    if strategy == "gdas":
        # GDAS's straight-through gradient only scales the chosen candidate's output, which
        # the next batch norm cancels: its alpha gradients here are rounding noise (~1e-9),
        # not reproducible bit for bit, so only the state above is compared
        return
    for a, b in zip(nas_alpha(straight), nas_alpha(resumed)):
        assert torch.equal(a, b)
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.result.sample == straight.result.sample
    assert json.dumps(resumed.result.probabilities) == \
        json.dumps(straight.result.probabilities)


class TwoShapes(nn.Module):
    """A supernet whose layer choice gives outputs of different widths: not mixable."""

    def __init__(self):
        super().__init__()
        self.choice = LayerChoice("head", [nn.Linear(64, 10), nn.Linear(64, 12)])
        mark_supernet(self, SupernetInfo(input_shape=(1, 8, 8)))  # probed in setup

    def forward(self, x):
        return self.choice(x.flatten(1))[:, :10]


def test_a_label_that_cannot_be_mixed_is_named_before_training():
    with pytest.raises(ValueError, match=r"label .head. cannot be mixed .*strategy=.spos."):
        make_trainer([OneShotNAS(strategy="darts", **FAST)]).fit(
            LitClassifier(TwoShapes()), datamodule=DigitsDataModule())


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="dart"), r"unknown strategy 'dart' \(did you mean 'darts'\?\)"),
    (dict(strategy="spos", lr=0.1), r"options \['lr'\] belong to the gradient strategies"),
    (dict(strategy="darts", alpha_lr=0.1), r"unknown option\(s\) \['alpha_lr'\]"),
    (dict(strategy="darts", order=3), "order must be 1"),
    (dict(strategy="gdas", sampling="sandwich"),
     r"options \['sampling'\] belong to the path-sampling strategies \['spos'\], not to "
     "strategy='gdas'"),
])
def test_bad_arguments_are_rejected_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneShotNAS(**kwargs)


def test_gdas_needs_a_number_of_epochs():
    trainer = make_trainer([OneShotNAS(strategy="gdas", **FAST)], max_epochs=-1, max_steps=2)
    with pytest.raises(ValueError, match="needs Trainer\\(max_epochs=...\\)"):
        trainer.fit(LitClassifier(create_space("mobilenet_tiny", **SPACE)),
                    datamodule=DigitsDataModule())


def test_budget_no_architecture_meets_fails_before_training(costs):
    smallest = costs(costs.space.smallest()).macs
    with pytest.raises(ValueError, match="below the smallest sub-network"):
        make_trainer([OneShotNAS(strategy="darts", budget=Budget(macs=smallest - 1), **FAST)]
                     ).fit(LitClassifier(create_space("mobilenet_tiny", **SPACE)),
                           datamodule=DigitsDataModule())


@pytest.mark.parametrize("strategy", ["darts", "spos"])
def test_ddp_ranks_hold_the_same_architecture_and_policy(strategy, tmp_path):
    """Two processes (gloo): the outer gradients are averaged, so both ranks end with the
    same alpha, the same policy and the same derived architecture, and rank 0 exports; SPOS
    ranks sample the same paths, and each scores its share of every generation on the same
    data: they hold the same scores, each computed once."""
    script = Path(__file__).with_name("ddp_fit.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path), strategy],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    for key in ("sample", "alpha", "policy", "weights", "heldout_consumed"):
        assert ranks[0][key] == ranks[1][key], key
    # one held-out batch per step per rank (SPOS scores on held-out data only at the end)
    assert ranks[0]["heldout_consumed"] == [6 if strategy == "darts" else None, 6]
    assert load_architecture(tmp_path / "arch").sample == ranks[0]["sample"]
    if strategy == "spos":
        assert ranks[0]["history"] == ranks[1]["history"]  # every sample and score
        scored = [rank["scored"] for rank in ranks]
        assert sum(scored) == len(ranks[0]["history"]) and abs(scored[0] - scored[1]) <= 2
    assert (tmp_path / "policy" / "policy.json").exists()
