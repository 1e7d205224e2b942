"""Lightning paths a real user takes that must never end in a silently wrong search: manual
optimization, several supernets, wrapper layers around the supernet, a checkpoint loaded
after the search, torch.compile, and mixed precision."""

import json

import lightning.pytorch as pl
import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import LitClassifier, make_trainer, midway_budget
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from nas_aug import ElasticSpec, build_subnet, load_architecture
from nas_aug.callbacks import AugmentSearch, OneShotNAS
from nas_aug.constraints import CostTable
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space
from nas_aug.strategies import DARTS

SPACE = dict(num_classes=10, in_chans=1, img_size=8, expand_ratios=(3, 6), kernel_sizes=(3, 5))
SEARCH = dict(population_size=4, generations=2, calibration_batches=2, progress=False)


def cross_entropy(module, batch):
    x, y = batch
    return F.cross_entropy(module(x), y)


class ManualClassifier(LitClassifier):
    """Manual optimization with two optimizers (the last layer, the rest)."""

    def __init__(self, backbone):
        super().__init__(backbone)
        self.automatic_optimization = False
        self.optimizer_steps = 0

    def training_step(self, batch, batch_idx):
        loss = cross_entropy(self, batch)
        optimizers = self.optimizers()
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(loss)
        for optimizer in optimizers:
            optimizer.step()
            self.optimizer_steps += 1
        return loss

    def configure_optimizers(self):
        *body, weight, bias = self.parameters()
        return torch.optim.SGD(body, lr=0.05), torch.optim.SGD([weight, bias], lr=0.05)


@pytest.mark.parametrize("callback", [
    lambda: OneShotNAS(strategy="darts", progress=False),
    lambda: AugmentSearch(method="dada", ops=("rotate", "brightness")),
], ids=["darts", "dada"])
def test_manual_optimization_without_a_loss_is_refused_before_training(callback):
    model = ManualClassifier(create_space("mobilenet_tiny", **SPACE))
    with pytest.raises(ValueError, match=r"manual optimization.*loss=lambda module, batch"):
        make_trainer([callback()]).fit(model, datamodule=DigitsDataModule())
    assert model.optimizer_steps == 0


def test_manual_optimization_with_a_loss_searches_and_never_steps_the_users_optimizers():
    pl.seed_everything(0)
    model = ManualClassifier(create_space("mobilenet_tiny", **SPACE))
    nas = OneShotNAS(strategy=DARTS(lr=0.05), loss=cross_entropy, progress=False)
    make_trainer([nas], limit_train_batches=5).fit(model, datamodule=DigitsDataModule())
    assert model.optimizer_steps == 2 * 5  # the two optimizers, once per training batch
    assert nas.outer_steps == 5
    moved = [float(p.detach().abs().max()) for p in nas.strategy.alpha.parameters()]
    assert max(moved) > 0  # alpha starts at zero


def test_spos_under_manual_optimization_needs_no_loss(tmp_path):
    model = ManualClassifier(create_space("mobilenet_tiny", **SPACE))
    nas = OneShotNAS(export_dir=tmp_path, **SEARCH)
    make_trainer([nas]).fit(model, datamodule=DigitsDataModule())
    assert model.optimizer_steps == 2 * 4
    assert load_architecture(tmp_path).sample == nas.result.sample


def test_a_search_whose_every_outer_step_was_skipped_exports_nothing(tmp_path):
    class SkipsEverything(LitClassifier):
        def training_step(self, batch, batch_idx):
            return None

    model = SkipsEverything(create_space("mobilenet_tiny", **SPACE))
    nas = OneShotNAS(strategy="darts", export_dir=tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="took no outer step.*nothing is exported"):
        make_trainer([nas]).fit(model, datamodule=DigitsDataModule())
    assert not (tmp_path / "architecture.json").exists()


class TeacherStudent(LitClassifier):
    def __init__(self):
        super().__init__(create_space("mobilenet_tiny", **SPACE))
        self.teacher = create_space("mobilenet_tiny", **SPACE).requires_grad_(False)

    def forward(self, x):
        return self.backbone(x)


def test_two_supernets_are_refused_by_name_and_one_is_searched_when_named(tmp_path):
    with pytest.raises(ValueError, match=r"2 supernets \(backbone, teacher\).*supernet="):
        make_trainer([OneShotNAS(**SEARCH)]).fit(TeacherStudent(),
                                                 datamodule=DigitsDataModule())
    with pytest.raises(ValueError, match=r"supernet='student' names no module.*'backbone'"):
        make_trainer([OneShotNAS(supernet="student", **SEARCH)]).fit(
            TeacherStudent(), datamodule=DigitsDataModule())

    pl.seed_everything(0)
    model = TeacherStudent()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    nas = OneShotNAS(supernet=model.backbone, export_dir=tmp_path, **SEARCH)
    make_trainer([nas]).fit(model, datamodule=DigitsDataModule())
    assert nas._supernet is model.backbone
    assert all(torch.equal(teacher_before[k], v) for k, v in model.teacher.state_dict().items())
    x = torch.rand(8, 1, 8, 8)
    subnet = build_subnet(load_architecture(tmp_path)).eval()
    torch.testing.assert_close(subnet(x), model.eval()(x))


def test_layers_before_the_supernet_are_probed_and_left_out_of_the_costs(tmp_path):
    space = dict(SPACE, in_chans=3)
    model = LitClassifier(nn.Sequential(nn.Conv2d(1, 3, 1), create_space("mobilenet_tiny",
                                                                          **space)))
    nas = OneShotNAS(export_dir=tmp_path, **SEARCH)
    make_trainer([nas]).fit(model, datamodule=DigitsDataModule())
    arch = load_architecture(tmp_path)
    assert arch.input_shape == (3, 8, 8)
    costs = CostTable.build(create_space("mobilenet_tiny", **space), (3, 8, 8))
    assert arch.macs == costs(arch.sample).macs
    assert "6 parameters of LitClassifier outside it (backbone.0.weight, backbone.0.bias)" \
        in arch.costs_cover
    assert "not counted" in (tmp_path / "report.md").read_text()


def test_a_wrapper_that_changes_the_input_gets_a_hint_the_supernet_can_take():
    space = dict(SPACE, in_chans=3, img_size=16)  # counted for 16x16; the data are 8x8
    model = LitClassifier(nn.Sequential(nn.Conv2d(1, 3, 1), create_space("mobilenet_tiny",
                                                                          **space)))
    with pytest.raises(ValueError, match=r"receives inputs of shape \(3, 8, 8\).*"
                                         r"input_shape=\(3, 8, 8\)"):
        make_trainer([OneShotNAS(**SEARCH)]).fit(model, datamodule=DigitsDataModule())


class WithTestStep(LitClassifier):
    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())


def test_a_checkpoint_loaded_after_the_search_tests_the_exported_network(tmp_path):
    pl.seed_everything(0)
    supernet = create_space("mobilenet_tiny", **SPACE)
    budget = midway_budget(CostTable.build(supernet, (1, 8, 8)))  # the winner is not largest
    model, data = WithTestStep(supernet), DigitsDataModule()
    nas = OneShotNAS(budget=budget, export_dir=tmp_path / "out", **SEARCH)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", save_last=True)
    trainer = make_trainer([nas, checkpoint], max_epochs=2, enable_checkpointing=True,
                           limit_test_batches=4)
    trainer.fit(model, datamodule=data)
    subnet = build_subnet(load_architecture(tmp_path / "out")).eval()
    correct = total = 0
    for i, (x, y) in enumerate(data.test_dataloader()):
        if i == 4:
            break
        correct += (subnet(x).argmax(-1) == y).sum().item()
        total += len(y)
    for ckpt_path in ("last", "best"):
        (metrics,) = trainer.test(model, datamodule=data, ckpt_path=ckpt_path, verbose=False)
        assert metrics["test_acc"] == pytest.approx(correct / total, abs=1e-6), ckpt_path
    assert nas.result is not None and nas.result.sample == load_architecture(
        tmp_path / "out").sample


def test_a_compiled_model_is_refused_with_the_reason():
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    with pytest.raises(ValueError, match="cannot search a torch.compile'd model.*build_subnet"):
        make_trainer([OneShotNAS(**SEARCH)]).fit(torch.compile(model),
                                                 datamodule=DigitsDataModule())
    model.backbone = torch.compile(model.backbone)
    with pytest.raises(ValueError, match=r"torch.compile'd model \(backbone\)"):
        make_trainer([OneShotNAS(**SEARCH)]).fit(model, datamodule=DigitsDataModule())


def test_the_precision_of_the_scores_is_recorded(tmp_path):
    model = LitClassifier(create_space("mobilenet_tiny", **SPACE))
    make_trainer([OneShotNAS(export_dir=tmp_path, **SEARCH)], precision="bf16-mixed").fit(
        model, datamodule=DigitsDataModule())
    assert json.loads((tmp_path / "architecture.json").read_text())["precision"] == "bf16-mixed"
    assert "measured under precision bf16-mixed" in (tmp_path / "report.md").read_text()


def test_elasticizing_asks_which_of_two_timm_models():
    model = LitClassifier(timm.create_model("mobilenetv3_small_050", num_classes=10, in_chans=1))
    model.teacher = timm.create_model("mobilenetv3_small_050", num_classes=10, in_chans=1)
    nas = OneShotNAS(elastic=ElasticSpec(width=(0.5, 1.0)), **SEARCH)
    with pytest.raises(ValueError, match=r"2 timm models \(backbone, teacher\).*"
                                         r"supernet='teacher'"):
        make_trainer([nas]).fit(model, datamodule=DigitsDataModule(img_size=32))


def test_a_timm_supernet_whose_samples_could_not_be_rebuilt_is_refused_before_training():
    """timm's test_resnet mixes BasicBlock and Bottleneck stages: its Bottleneck width needs a
    base_width the BasicBlocks cannot take, so no narrowed sample would export."""
    model = LitClassifier(timm.create_model("test_resnet", num_classes=10, in_chans=1))
    nas = OneShotNAS(elastic=ElasticSpec(width=(0.5, 1.0)), input_shape=(1, 16, 16), **SEARCH)
    trainer = make_trainer([nas])
    with pytest.warns(UserWarning, match="BasicBlock"), \
            pytest.raises(ValueError, match=r"smallest sub-network of this timm supernet could "
                                            r"not be exported back to timm .*base_width 64 only"):
        trainer.fit(model, datamodule=DigitsDataModule(img_size=16))
    assert trainer.global_step == 0  # refused before any training
