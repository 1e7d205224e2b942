"""OneShotNAS inside an ordinary fit of a LightningModule written the way Lightning's docs do."""

import copy
import json

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from helpers import LitClassifier, make_trainer, midway_budget
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nas_aug import Budget, build_subnet, load_architecture
from nas_aug.callbacks import OneShotNAS
from nas_aug.constraints import CostTable, FvcoreCounter
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space
from nas_aug.strategies.evaluation import recalibrate_batch_norm
from nas_aug.supernet import activate, choice_modules

SPACE = dict(num_classes=10, in_chans=1, img_size=8, expand_ratios=(3, 6), kernel_sizes=(3, 5))
SEARCH = dict(population_size=4, generations=2, calibration_batches=2, progress=False)


@pytest.fixture(scope="module")
def costs():
    return CostTable.build(create_space("mobilenet_tiny", **SPACE), (1, 8, 8))


def test_drop_in_fit_searches_within_budget_and_exports(tmp_path, costs):
    pl.seed_everything(0)
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    budget = midway_budget(costs)
    nas = OneShotNAS(budget=budget, export_dir=tmp_path / "out", **SEARCH)
    trainer = make_trainer([nas])
    trainer.fit(model, datamodule=DigitsDataModule())

    assert nas.result.chosen.macs <= budget.macs
    history = json.loads(json.dumps(nas.state_dict()))["strategy"]["search"]["history"]
    assert max(score for _, score in history) == nas.result.score
    ties = [c.macs for c in nas.result.candidates if c.score == nas.result.score]
    assert nas.result.chosen.macs == min(ties)  # the cheapest of the best
    assert all(c.macs <= budget.macs for c in nas.result.top)
    # the user's optimizer holds exactly the module's parameters, nothing of the search
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}

    arch = load_architecture(tmp_path / "out")
    assert arch.sample == nas.result.sample and arch.macs == nas.result.chosen.macs
    subnet = build_subnet(arch).eval()
    assert choice_modules(subnet) == []
    assert FvcoreCounter()(subnet, torch.zeros(1, 1, 8, 8)) == arch.macs
    x = torch.rand(16, 1, 8, 8)
    model.eval()  # the fit leaves the winner active, with its recalibrated statistics
    torch.testing.assert_close(subnet(x), model(x))


class PathRecorder(pl.Callback):
    """Counts supernet forward passes per training step and records the active depth."""

    def __init__(self):
        self.forwards, self.depths, self.in_step = [], [], False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.forwards.append(0)
        self.depths.append(tuple(stage.depth for stage in pl_module.backbone.stages))
        self.in_step = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.in_step = False

    def setup(self, trainer, pl_module, stage):
        def count(module, args):
            if self.in_step:
                self.forwards[-1] += 1
        pl_module.backbone.register_forward_pre_hook(count)


@pytest.mark.parametrize("sampling, per_step", [("uniform", 1), ("sandwich", 3),
                                                 ("attentive", 3)])
def test_each_step_trains_sampled_paths(sampling, per_step):
    pl.seed_everything(0)
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    recorder = PathRecorder()
    nas = OneShotNAS(sampling=sampling, **SEARCH)
    make_trainer([nas, recorder], max_epochs=2).fit(model, datamodule=DigitsDataModule())
    assert recorder.forwards == [per_step] * 8
    if sampling == "uniform":
        assert len(set(recorder.depths)) > 1
    else:  # the user's own step runs the largest path; smallest and random (attentive:
        # chosen by forwards without gradients before the step) follow
        assert set(recorder.depths) == {(2, 3, 3, 3)}


@pytest.mark.parametrize("sampling", ["uniform", "attentive"])
def test_resumed_fit_finds_the_same_architecture(tmp_path, sampling):
    def fit(max_epochs, ckpt_path=None, checkpoint=None):
        pl.seed_everything(0)
        model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
        nas = OneShotNAS(sampling=sampling, **SEARCH)
        callbacks = [nas] + ([checkpoint] if checkpoint else [])
        trainer = pl.Trainer(max_epochs=max_epochs, limit_train_batches=4, limit_val_batches=2,
                             callbacks=callbacks, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=bool(checkpoint),
                             default_root_dir=tmp_path)
        trainer.fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
        return nas.state_dict(), model

    uninterrupted, model_a = fit(max_epochs=2)
    fit(max_epochs=1, checkpoint=ModelCheckpoint(dirpath=tmp_path, filename="epoch1"))
    resumed, model_b = fit(max_epochs=2, ckpt_path=tmp_path / "epoch1.ckpt")
    timeless = {"chosen", "top"}  # candidates and cost hold times
    assert ({k: resumed["result"][k] for k in timeless}
            == {k: uninterrupted["result"][k] for k in timeless})
    assert ([c["sample"] for c in resumed["result"]["candidates"]]
            == [c["sample"] for c in uninterrupted["result"]["candidates"]])
    assert (resumed["strategy"]["search"]["history"]
            == uninterrupted["strategy"]["search"]["history"])  # every score
    assert resumed["strategy"]["rng"] == uninterrupted["strategy"]["rng"]
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_state_dict_round_trip_continues_path_sampling():
    first, second = OneShotNAS(seed=3), OneShotNAS(seed=99)
    first.strategy.rng.random()
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert ([second.strategy.rng.random() for _ in range(5)]
            == [first.strategy.rng.random() for _ in range(5)])


def test_state_key_tells_instances_apart_but_not_export_paths(tmp_path):
    assert OneShotNAS(seed=1).state_key != OneShotNAS(seed=2).state_key
    assert OneShotNAS(sampling="sandwich").state_key != OneShotNAS().state_key
    # a resumed fit may name its export directory differently and still gets its state back
    assert OneShotNAS(export_dir=tmp_path / "a").state_key == OneShotNAS(
        export_dir="elsewhere").state_key


def test_module_without_choice_modules_is_rejected():
    model = LitClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    with pytest.raises(ValueError, match="no choice modules in LitClassifier"):
        make_trainer([OneShotNAS(**SEARCH)]).fit(model, datamodule=DigitsDataModule())


def test_budget_below_the_smallest_subnet_fails_before_training(costs):
    smallest = costs(costs.space.smallest())
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    trainer = make_trainer([OneShotNAS(budget=Budget(macs=1000), **SEARCH)])
    with pytest.raises(ValueError, match="below the smallest sub-network") as err:
        trainer.fit(model, datamodule=DigitsDataModule())
    assert f"{smallest.macs / 1e6:.3f}M MACs" in str(err.value)
    assert trainer.global_step == 0


def test_export_dir_holding_a_result_is_refused_before_training(tmp_path):
    (tmp_path / "architecture.json").write_text('{"keep": "me"}')
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    trainer = make_trainer([OneShotNAS(export_dir=tmp_path, **SEARCH)])
    with pytest.raises(FileExistsError, match="already holds a result"):
        trainer.fit(model, datamodule=DigitsDataModule())
    assert trainer.global_step == 0
    assert (tmp_path / "architecture.json").read_text() == '{"keep": "me"}'


def test_fit_without_heldout_data_is_rejected():
    digits = DigitsDataModule()
    digits.setup()
    images, labels = next(iter(digits.train_dataloader()))
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    with pytest.raises(ValueError, match="held-out data"):
        make_trainer([OneShotNAS(**SEARCH)]).fit(model, train_dataloaders=loader)


def test_heldout_loader_can_be_given_directly(tmp_path):
    digits = DigitsDataModule()
    digits.setup()
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    nas = OneShotNAS(heldout=digits.test_dataloader(), **SEARCH)
    make_trainer([nas], limit_val_batches=0).fit(model, train_dataloaders=digits.train_dataloader())
    assert 0.0 <= nas.result.score <= 1.0


def test_budget_admitting_too_few_architectures_fails_before_training(costs):
    smallest = costs(costs.space.smallest()).macs
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    trainer = make_trainer([OneShotNAS(budget=Budget(macs=smallest + 1), **SEARCH)])
    with pytest.raises(ValueError, match="admits too few architectures"):
        trainer.fit(model, datamodule=DigitsDataModule())
    assert trainer.global_step == 0


def test_inputs_of_another_size_than_the_cost_table_are_rejected():
    model = LitClassifier(create_space("mobilenet_tiny", **{**SPACE, "img_size": 16}))
    with pytest.raises(ValueError, match=r"supernet receives inputs of shape \(1, 8, 8\) but MACs"):
        make_trainer([OneShotNAS(**SEARCH)]).fit(model, datamodule=DigitsDataModule())


def test_sandwich_step_sums_the_gradients_of_its_paths():
    class GradientProbe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batch, self.before = batch, copy.deepcopy(pl_module.backbone)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.grads = [p.grad.clone() for p in pl_module.backbone.parameters()]

    pl.seed_everything(0)
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    probe = GradientProbe()
    nas = OneShotNAS(sampling="sandwich", sandwich_random=0, **SEARCH)
    make_trainer([nas, probe], limit_train_batches=1).fit(model, datamodule=DigitsDataModule())
    net, (x, y) = probe.before.train(), probe.batch
    for sample in (nas.space.largest(), nas.space.smallest()):
        activate(net, sample)
        F.cross_entropy(net(x), y).backward()
    for mine, expected in zip(probe.grads, (p.grad for p in net.parameters())):
        torch.testing.assert_close(mine, expected)


def test_inplace_distillation_adds_the_kl_to_the_largest_paths_soft_predictions():
    class GradientProbe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batch, self.before = batch, copy.deepcopy(pl_module.backbone)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.grads = [p.grad.clone() for p in pl_module.backbone.parameters()]

    pl.seed_everything(0)
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    probe, weight, t = GradientProbe(), 0.5, 2.0
    nas = OneShotNAS(sampling="sandwich", sandwich_random=0, distill_weight=weight,
                     distill_temperature=t, **SEARCH)
    make_trainer([nas, probe], limit_train_batches=1).fit(model, datamodule=DigitsDataModule())
    net, (x, y) = probe.before.train(), probe.batch
    activate(net, nas.space.largest())
    teacher = net(x)
    F.cross_entropy(teacher, y).backward()
    activate(net, nas.space.smallest())
    student = net(x)
    p_teacher = torch.softmax(teacher.detach() / t, dim=-1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / t, dim=-1))).sum() / len(x)
    (F.cross_entropy(student, y) + weight * t * t * kl).backward()
    for mine, expected in zip(probe.grads, (p.grad for p in net.parameters())):
        torch.testing.assert_close(mine, expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampling="random"), "unknown sampling 'random'; choose one of"),
    (dict(sandwich_random=2), "needs sampling='sandwich'"),
    (dict(distill_weight=1.0), "distill_weight=1.0 distils .* needs sampling='sandwich'"),
    (dict(sampling="sandwich", distill_weight=-1.0), "distill_weight must be"),
    (dict(sampling="attentive", attentive_candidates=1),
     "attentive_candidates must be an integer >= 2, got 1"),
    (dict(sampling="sandwich", distill_weight=1.0, distill_temperature=0),
     "distill_temperature must be"),
    (dict(input_shape=(16, 1, 8, 8)), "must be \\(channels, height, width\\)"),
    (dict(budget=1_000_000), "budget must be a nas_aug.Budget"),
    (dict(calibration_batches=0), "calibration_batches must be an integer >= 1, got 0"),
    (dict(population_size=1), "population_size"),
    (dict(counter="flops"), "unknown MAC counter 'flops'"),
])
def test_bad_arguments_are_rejected_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneShotNAS(**kwargs)


def test_validation_during_fit_uses_recalibrated_statistics_of_the_largest_path():
    class Probe(pl.Callback):  # placed before OneShotNAS: sees the model before recalibration
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                self.inputs = []
            self.inputs.append(batch[0].clone())

        def on_validation_start(self, trainer, pl_module):
            self.before = copy.deepcopy(pl_module.backbone)

        def on_validation_end(self, trainer, pl_module):
            self.after = {k: v.clone() for k, v in pl_module.backbone.state_dict().items()}

    pl.seed_everything(0)
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    probe = Probe()
    nas = OneShotNAS(**{**SEARCH, "calibration_batches": 3})
    make_trainer([probe, nas], num_sanity_val_steps=0).fit(model, datamodule=DigitsDataModule())
    expected = probe.before
    activate(expected, nas.space.largest())
    recalibrate_batch_norm(expected, expected, probe.inputs[:3])
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(probe.after[key], value, msg=key)


@pytest.mark.parametrize("sampling", ["sandwich", "attentive"])
def test_sandwich_sampling_is_refused_in_multi_process_fits(monkeypatch, sampling):
    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda self: 2))
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    trainer = make_trainer([OneShotNAS(sampling=sampling, **SEARCH)])
    with pytest.raises(ValueError, match=f"sampling='{sampling}' .* \\(world_size=2\\)"):
        trainer.fit(model, datamodule=DigitsDataModule())
    assert trainer.global_step == 0


def test_one_supernet_is_searched_for_several_budgets(tmp_path, costs):
    pl.seed_everything(0)
    smallest, largest = (costs(costs.space.smallest()).macs, costs(costs.space.largest()).macs)
    budgets = [Budget(macs=smallest + (largest - smallest) * k // 4) for k in (1, 2, 4)]
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    nas = OneShotNAS(budgets=budgets, export_dir=tmp_path, **SEARCH)
    make_trainer([nas]).fit(model, datamodule=DigitsDataModule())
    assert len(nas.results) == 3 and nas.result is nas.results[-1]
    x = torch.rand(8, 1, 8, 8)
    for index, (budget, result) in enumerate(zip(budgets, nas.results)):
        arch = load_architecture(tmp_path / f"budget_{index}")
        assert arch.sample == result.sample and arch.macs == result.chosen.macs <= budget.macs
        assert FvcoreCounter()(build_subnet(arch), torch.zeros(1, 1, 8, 8)) == arch.macs
        assert all(c.macs <= budget.macs for c in result.candidates)
    # a looser budget's winner is at least as good as every tighter budget's
    scores = [result.score for result in nas.results]
    assert scores == sorted(scores)
    # a score is computed once per sub-network, whichever budget's search asks for it
    scored = [c for r in nas.results for c in r.candidates]
    by_sample = {}
    for candidate in scored:
        by_sample.setdefault(str(sorted(candidate.sample.items())), set()).add(candidate.score)
    assert all(len(values) == 1 for values in by_sample.values())
    table = (tmp_path / "budgets.md").read_text()
    assert all(f"[budget_{i}](budget_{i}/report.md)" in table for i in range(3))
    assert (tmp_path / "pareto.png").exists()
    model.eval()  # the last budget's winner is active, with its own statistics
    torch.testing.assert_close(build_subnet(load_architecture(tmp_path / "budget_2")).eval()(x),
                               model(x))


@pytest.mark.parametrize("kwargs, message", [
    (dict(budgets=[Budget(macs=2_000_000), Budget(macs=1_000_000)]), "budgets must increase"),
    (dict(budgets=[Budget(macs=1_000_000), Budget(macs=1_000_000)]), "budgets must increase"),
    (dict(budgets=[Budget(macs=1_000_000), Budget(params=10_000)]), "the same limits"),
    (dict(budgets=[]), "non-empty list of nas_aug.Budget"),
    (dict(budgets=[Budget(macs=1_000_000)], budget=Budget(macs=1_000_000)), "not both"),
    (dict(budgets=[Budget(macs=1_000_000)], strategy="darts"), "trains towards one budget"),
])
def test_bad_budgets_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OneShotNAS(**kwargs)
