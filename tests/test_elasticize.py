"""``elasticize``: timm models turned into supernets whose largest sub-network is the model."""

import copy
import random

import pytest
import timm
import torch
from helpers import LitClassifier, calibrate, make_trainer, split_tensors
from lightning.pytorch import Callback
from timm.models import EfficientNet, ResNet
from timm.models.resnet import Bottleneck
from torch import nn

from nas_aug import ElasticSpec, elasticize
from nas_aug.callbacks import OneShotNAS
from nas_aug.constraints import CostTable
from nas_aug.data import DigitsDataModule
from nas_aug.elastic_models._timm import decode_arch_def
from nas_aug.elastic_models.layers import width_choice
from nas_aug.space import ElasticConv2d
from nas_aug.strategies.evaluation import recalibrate_batch_norm, top1_accuracy
from nas_aug.supernet import activate, choice_modules, extract_subnet, mixed, space_of, unmixable

SHAPE = (1, 32, 32)
# tiny timm models of each family (name, create_model options)
FAMILIES = {
    "mobilenetv3": ("mobilenetv3_small_050", {}),
    "efficientnet": ("test_efficientnet", {"depth_multiplier": 2}),  # ConvBnAct, EdgeResidual, IR
    "resnet": ("test_resnet", {"layers": (2, 2, 2, 2), "zero_init_last": False}),
}


def tiny(family: str) -> nn.Module:
    name, options = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, in_chans=1, **options)
    return calibrate(model, SHAPE)  # batch-norm statistics that make every channel count


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request):
    """(original, elasticized copy), both in eval mode."""
    original = tiny(request.param)
    model = copy.deepcopy(original)
    elasticize(model)
    return original, model.eval()


def test_largest_sub_network_is_the_original(pair):
    original, model = pair
    x = torch.randn(8, *SHAPE)
    activate(model, space_of(model).largest())
    torch.testing.assert_close(model(x), original(x), rtol=0, atol=1e-5)
    subnet = extract_subnet(model, space_of(model).largest(), x)
    assert choice_modules(subnet) == []
    assert subnet.state_dict().keys() == original.state_dict().keys()  # same layout as timm's
    for (key, value), theirs in zip(subnet.state_dict().items(), original.state_dict().values()):
        assert torch.equal(value, theirs), key
    torch.testing.assert_close(subnet.eval()(x), original(x), rtol=0, atol=1e-5)


def test_extracted_samples_equal_the_supernet(pair):
    original, model = pair
    space, x, rng = space_of(model), torch.randn(4, *SHAPE), random.Random(0)
    for sample in [space.smallest(), space.random(rng), space.random(rng)]:
        activate(model, sample, space)
        expected = model(x)
        subnet = extract_subnet(model, sample, x).eval()
        assert choice_modules(subnet) == []
        torch.testing.assert_close(subnet(x), expected, rtol=0, atol=1e-5)
    assert not torch.allclose(expected, original(x), atol=1e-3)  # samples do differ
    activate(model, space.largest(), space)


def test_cost_table_is_exact(pair):
    original, model = pair
    table = CostTable.build(model, SHAPE)  # raises if a full fvcore count disagrees
    largest, smallest = table(table.space.largest()), table(table.space.smallest())
    assert largest.params == sum(p.numel() for p in original.parameters())
    assert smallest.macs < largest.macs and smallest.params < largest.params


def test_labels_and_candidates():
    model = tiny("mobilenetv3")
    report = elasticize(model, ElasticSpec(kernel=(3, 5, 7)))
    space = space_of(model)
    assert set(report.labels) == set(space.labels) and report.skipped == {}
    # the k5 depthwise convs get (3, 5): 7 is above the original kernel; k3 ones get none
    assert space.candidates("blocks.2.0.kernel") == (3, 5)
    assert "blocks.1.0.kernel" not in space and "blocks.0.0.kernel" not in space
    assert space.candidates("blocks.1.0.width") == (0.5, 0.75, 1.0)
    assert space.candidates("blocks.4.depth") == (1, 2, 3)
    assert "blocks.0.depth" not in space  # one block
    assert isinstance(model.blocks[2].blocks[0].conv_dw, ElasticConv2d)

    resnet = tiny("resnet")  # test_resnet: layer3 Bottleneck, the others BasicBlock
    with pytest.warns(UserWarning, match=r"layer1\.0 \(BasicBlock: width: timm builds"):
        report = elasticize(resnet, ElasticSpec(width=(0.5,), depth=False))
    assert report.labels == ("width",)  # one for every Bottleneck: timm's base_width
    assert report.elastic == {"layer3.0": ("width",), "layer3.1": ("width",)}
    assert space_of(resnet).candidates("width") == (0.5, 1.0)  # 1.0 always


def test_width_ratios_that_round_alike_merge():
    # 24 channels: 0.75 rounds to 24 (the full width), 0.5 to 16
    assert width_choice("w", [24], ElasticSpec())[0].candidates == (0.5, 1.0)
    assert width_choice("w", [8], ElasticSpec()) == (None, None)
    # a width timm cannot build is left out, and said so
    choice, why = width_choice("w", [48], ElasticSpec(), builds=lambda c: c != 40)
    assert choice.candidates == (0.5, 1.0)
    assert why == "width 0.75 (40 channels) left out: timm could not build it"


@pytest.mark.parametrize("options, match", [
    ({"width": (0.5, 1.5)}, r"width 1\.5 is not in \(0, 1\]"),
    ({"width": (0,)}, r"width 0 is not in \(0, 1\]"),
    ({"width": (True,)}, r"width True is not in \(0, 1\]"),
    ({"width": 0.5}, r"width must be a tuple of values, got 0\.5"),
    ({"kernel": (3, 4)}, r"kernel 4 is not an odd positive integer"),
    ({"kernel": (-3,)}, r"kernel -3 is not an odd positive integer"),
    ({"kernel": (3.0,)}, r"kernel 3\.0 is not an odd positive integer"),
    ({"depth": 1}, r"depth must be True or False, got 1"),
])
def test_bad_spec(options, match):
    with pytest.raises(ValueError, match=match):
        ElasticSpec(**options)


def test_nothing_to_make_elastic():
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"no layer it can make elastic in Sequential.*"
                                         r"InvertedResidual.*BasicBlock, Bottleneck"):
        elasticize(plain)
    model = tiny("resnet")
    with pytest.raises(ValueError, match="no layer it can make elastic in ResNet"):
        elasticize(model, ElasticSpec(width=(), kernel=(), depth=False))
    assert choice_modules(model) == []  # unchanged
    elasticize(model)
    with pytest.raises(ValueError, match="already holds choice modules"):
        elasticize(model)


def test_unconvertible_blocks_are_reported_and_left_as_they_were():
    arch = [["ds_r1_k3_s1_e1_c8"], ["ir_r2_k5_s2_e4_c16_se0.25"],
            ["ir_r2_k3_s2_e4_c24_cc4"],  # CondConv experts
            ["uir_r1_a3_k5_s1_e4_c24"]]  # MobileNetV4's universal inverted residual
    torch.manual_seed(0)
    original = EfficientNet(decode_arch_def(arch), num_classes=10, in_chans=1, stem_size=8,
                            num_features=32).eval()
    model = copy.deepcopy(original)
    with pytest.warns(UserWarning, match=r"left 4 module\(s\) of EfficientNet as they were: "
                                         r"blocks\.2\.0 \(CondConvResidual"):
        report = elasticize(model)
    assert set(report.skipped) == {"blocks.2.0", "blocks.2.1", "blocks.3.0", "blocks.2"}
    assert "UniversalInvertedResidual" in report.skipped["blocks.3.0"]
    assert "cannot be skipped" in report.skipped["blocks.2"]
    assert set(report.elastic) == {"blocks.1", "blocks.1.0", "blocks.1.1"}
    assert type(model.blocks[2]) is nn.Sequential and choice_modules(model.blocks[2]) == []
    x = torch.randn(2, *SHAPE)
    torch.testing.assert_close(model(x), original(x), rtol=0, atol=1e-5)


def test_mixed_forward_differentiates_every_label():
    model = tiny("mobilenetv3")
    elasticize(model)
    # 96 px: the last stage still sees 3x3 maps, where a 5x5 kernel's outer ring counts
    space, x = space_of(model), torch.randn(2, 1, 96, 96)
    alpha = {label: torch.zeros(len(space.candidates(label)), requires_grad=True)
             for label in space.labels}
    with mixed(model, {k: a.softmax(0) for k, a in alpha.items()}, example_input=x):
        model(x).square().sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alpha.values())
    assert unmixable(model) == {}


def test_one_shot_nas_fit_on_an_elasticized_timm_model(tmp_path):
    torch.manual_seed(0)
    backbone = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10,
                                 in_chans=1)
    module = LitClassifier(backbone)
    report = elasticize(module)  # the model inside a LightningModule
    assert report.labels[0].startswith("backbone.blocks.")
    nas = OneShotNAS(population_size=4, generations=2, calibration_batches=2, progress=False,
                     export_dir=tmp_path / "out")
    make_trainer([nas], limit_train_batches=2).fit(
        module, datamodule=DigitsDataModule(batch_size=32, img_size=32))
    space = space_of(module)
    assert space.validate(nas.result.sample) == nas.result.sample
    assert nas.result.chosen.macs <= nas.cost_table(space.largest()).macs
    assert (tmp_path / "out" / "subnet.safetensors").exists()


def test_one_shot_nas_elasticizes_the_model_in_setup_as_a_warm_start():
    torch.manual_seed(0)
    backbone = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10,
                                 in_chans=1)
    module = LitClassifier(backbone)
    nas = OneShotNAS(elastic=ElasticSpec(width=(0.5, 1.0), kernel=(3, 5)), population_size=4,
                     generations=2, calibration_batches=2, progress=False)
    trainer = make_trainer([nas], max_epochs=1, limit_train_batches=1)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=32, img_size=32))
    labels = space_of(module).labels
    # labels are the timm model's own module names, wherever it sits in the LightningModule
    assert labels and labels[0].startswith("blocks.") and nas._supernet is backbone
    # the user's optimizer was built after the conversion: it holds the elastic layers' weights
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.parameters()}
    assert nas.cost_table is not None and nas.result.sample.keys() == set(labels)


def test_elastic_must_be_a_spec():
    with pytest.raises(ValueError, match="elastic must be a nas_aug.ElasticSpec"):
        OneShotNAS(elastic={"width": (0.5, 1.0)})


class _StepsToTarget(Callback):
    """Before the first step and every ``every`` steps: the held-out top-1 of the largest
    sub-network (batch norm recalibrated on fixed training batches, as ``OneShotNAS`` scores);
    records the first step at which it reaches ``target`` and then stops the fit."""

    def __init__(self, target: float, calibration, heldout, every: int = 5):
        self.target, self.every = target, every
        self.calibration, self.heldout = calibration, heldout
        self.reached_at: int | None = None
        self.curve: list[tuple[int, float]] = []

    def _check(self, trainer, pl_module) -> None:
        with torch.random.fork_rng(devices=[]):  # leaves the fit's random stream alone
            activate(pl_module, space_of(pl_module).largest())
            accuracy = held_out_top1(pl_module, self.calibration, self.heldout)
        self.curve.append((trainer.global_step, accuracy))
        if accuracy >= self.target and self.reached_at is None:
            self.reached_at = trainer.global_step
            trainer.should_stop = True

    def on_train_start(self, trainer, pl_module):
        self._check(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._check(trainer, pl_module)


def held_out_top1(model: nn.Module, calibration, heldout) -> float:
    recalibrate_batch_norm(model, model, calibration)
    model.eval()
    try:
        return top1_accuracy(model, heldout)
    finally:
        model.train()


def test_warm_started_search_reaches_the_originals_accuracy_in_fewer_steps():
    """A trained timm model, elasticized by ``OneShotNAS(elastic=...)``, starts its supernet fit
    at the trained accuracy; the same fit from a fresh initialisation (same seed, space, data
    order, optimizer) needs tens of steps to reach 90% of it."""
    dm = DigitsDataModule(batch_size=64, img_size=16, seed=0)
    dm.setup()
    images, _ = split_tensors(dm, "train")
    calibration = list(images[:256].split(64))
    heldout = list(dm.val_dataloader())
    spec = ElasticSpec(width=(0.5, 0.75, 1.0))  # one block a stage: one width, timm's own

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return ResNet(Bottleneck, layers=(1, 1, 1, 1), channels=(16, 32, 48, 64), stem_width=16,
                      num_classes=10, in_chans=1)

    trained = LitClassifier(fresh())  # plain training: the "pretrained" original
    make_trainer([], max_epochs=-1, max_steps=100, limit_train_batches=1.0,
                 limit_val_batches=0, num_sanity_val_steps=0).fit(trained, datamodule=dm)
    original = held_out_top1(trained, calibration, heldout)
    assert original > 0.9  # digits at 16x16: about 0.98 after 100 steps
    target = 0.9 * original

    steps, searched, curves = {}, {}, {}
    for start, backbone in (("warm", copy.deepcopy(trained.backbone)), ("cold", fresh())):
        torch.manual_seed(1)
        probe = _StepsToTarget(target, calibration, heldout)
        nas = OneShotNAS(elastic=spec, input_shape=(1, 16, 16), population_size=2,
                         generations=2, calibration_batches=2, progress=False, seed=0)
        make_trainer([nas, probe], max_epochs=-1, max_steps=200, limit_train_batches=1.0,
                     limit_val_batches=0, num_sanity_val_steps=0).fit(
            LitClassifier(backbone), datamodule=dm)
        steps[start], searched[start] = probe.reached_at, nas.result.score
        curves[start] = probe.curve
    # the cold fit must get there too (else the comparison says nothing): 35 steps here
    assert steps["cold"] is not None and steps["cold"] >= 10, (steps, original, curves)
    assert steps["warm"] is not None and 4 * steps["warm"] <= steps["cold"], (steps, curves)
    assert searched["warm"] >= target, (searched, original)  # the searched sub-network too
