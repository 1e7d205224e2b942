"""timm's definition of sub-networks of elasticized timm models: timm builds each from block
strings, loads its weights (strict) and gives the same outputs; the export writes ``timm.json``
beside the weights and rebuilds from it; what timm cannot build is refused with the reason."""

import copy
import json
import random

import pytest
import timm
import torch
from helpers import SMALL_SPACES, LitClassifier, calibrate, search_result
from safetensors.torch import load_file
from timm.models import EfficientNet, MobileNetV3, ResNet
from timm.models.resnet import Bottleneck
from torch import nn

from nas_aug import ElasticSpec, build_subnet, elasticize, load_architecture, load_timm
from nas_aug.cli import main
from nas_aug.constraints import Cost
from nas_aug.elastic_models import build_timm, timm_definition
from nas_aug.elastic_models._timm import decode_arch_def
from nas_aug.elastic_models.timm_export import TIMM_FILE, check_exportable, check_timm
from nas_aug.export import export_architecture
from nas_aug.io import MANIFEST_FILE
from nas_aug.search_spaces import create_space
from nas_aug.supernet import extract_subnet, space_of

SHAPE = (1, 32, 32)
ONE_CHANNEL = {"num_classes": 10, "in_chans": 1}
FAMILIES = {
    "mobilenetv3": lambda: timm.create_model("mobilenetv3_small_050",  # ds + ir + cn
                                             **ONE_CHANNEL),
    "efficientnet": lambda: timm.create_model("test_efficientnet",  # cn, er, ir (se from input)
                                              depth_multiplier=2, **ONE_CHANNEL),
    "resnet": lambda: ResNet(Bottleneck, layers=(2, 2, 2, 2), channels=(8, 16, 16, 32),
                             stem_width=16, zero_init_last=False, **ONE_CHANNEL),
}


def tiny(family: str, spec: ElasticSpec | None = None) -> nn.Module:
    """A calibrated tiny timm model of ``family``, elasticized, in eval mode."""
    torch.manual_seed(0)
    model = FAMILIES[family]()
    elasticize(model, spec)
    return calibrate(model, SHAPE)


def rebuilt(subnet: nn.Module) -> nn.Module:
    """timm's model of ``subnet``'s definition (through JSON), with its weights (strict)."""
    definition = json.loads(json.dumps(timm_definition(subnet)))
    net = build_timm(definition)
    net.load_state_dict(subnet.state_dict())
    return net.eval()


@pytest.mark.parametrize("family", ["mobilenetv3", "efficientnet", "resnet"])
def test_samples_rebuild_in_timm_with_equal_outputs(family):
    model = tiny(family)
    space, x, rng = space_of(model), torch.randn(4, *SHAPE), random.Random(0)
    definitions = []
    samples = [space.largest(), space.smallest(), *(space.random(rng) for _ in range(4))]
    for sample in samples:
        subnet = extract_subnet(model, sample, x).eval()
        net = rebuilt(subnet)
        assert type(net) is {"mobilenetv3": MobileNetV3, "efficientnet": EfficientNet,
                              "resnet": ResNet}[family]
        torch.testing.assert_close(net(x), subnet(x), rtol=0, atol=1e-5)
        definitions.append(timm_definition(subnet)["block_args" if family != "resnet"
                                                   else "kwargs"])
    distinct = len({json.dumps(sample, sort_keys=True) for sample in samples})
    assert len({json.dumps(d) for d in definitions}) == distinct  # one definition a sample


def test_the_largest_sample_is_timms_own_definition():
    model = tiny("efficientnet")
    subnet = extract_subnet(model, space_of(model).largest(), torch.zeros(1, *SHAPE))
    definition = timm_definition(subnet)
    # timm's test_efficientnet arch_def at depth_multiplier=2 (cn's skip only where it applies)
    assert definition["block_args"] == [
        ["cn_r1_k3_s1_c16", "cn_r1_k3_s1_c16_skip"], ["er_r2_k3_s2_e4_c24"],
        ["er_r2_k3_s2_e4_c32"], ["ir_r2_k3_s2_e4_c48_se0.25"], ["ir_r2_k3_s2_e4_c64_se0.25"]]
    net = EfficientNet(block_args=decode_arch_def(definition["block_args"]),
                       **{k: v for k, v in definition["kwargs"].items() if k != "act_layer"},
                       act_layer=nn.SiLU)
    net.load_state_dict(subnet.state_dict())
    assert definition["kwargs"]["act_layer"] == "silu" and definition["prefix"] == ""


def test_narrowed_blocks_get_float_expansion_and_se_ratios():
    model = tiny("mobilenetv3")
    space = space_of(model)
    sample = {**space.largest(), "blocks.2.1.width": 0.5}
    subnet = extract_subnet(model, sample, torch.zeros(1, *SHAPE))
    strings = timm_definition(subnet)["block_args"][2]
    # 144 expanded channels from 24 -> 72 (e3); its squeeze-excite keeps 40 reduced channels
    assert strings[1] == "ir_r1_k5_s1_e3_c24_se0.56"
    assert subnet.blocks[2][1].se.conv_reduce.out_channels == 40


def test_a_resnet_width_is_timms_base_width():
    model = tiny("resnet")
    space, x = space_of(model), torch.randn(2, *SHAPE)
    assert [label for label in space.labels if "width" in label] == ["width"]
    assert space.candidates("width") == (0.5, 0.75, 1.0)
    for ratio, base_width in zip(space.candidates("width"), (32, 48, 64)):
        subnet = extract_subnet(model, {**space.largest(), "width": ratio}, x)
        assert timm_definition(subnet)["kwargs"]["base_width"] == base_width
        assert [subnet.get_submodule(f"layer{i}")[0].conv1.out_channels
                for i in range(1, 5)] == [c * base_width // 64 for c in (8, 16, 16, 32)]
    depth_only = {**space.smallest(), "width": 1.0}
    assert timm_definition(extract_subnet(model, depth_only, x))["kwargs"]["layers"] == [1] * 4
    # a hand-narrowed block timm cannot express is still refused with the reason
    narrowed = extract_subnet(model, space.largest(), x)
    narrowed.layer2[0].conv1 = nn.Conv2d(64, 12, 1, bias=False)
    with pytest.raises(ValueError, match=r"layer2\.0 is 12 channels wide inside, where timm's "
                                         r"ResNet makes every Bottleneck of layer2 16 wide"):
        timm_definition(narrowed)


def _mixed_resnet() -> nn.Module:
    """timm's test_resnet (layer3 Bottleneck, the others BasicBlock) with elastic widths."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", **ONE_CHANNEL)
    with pytest.warns(UserWarning, match=r"layer1\.0 \(BasicBlock: width: timm builds a "
                                         r"BasicBlock only at its stage's width"):
        elasticize(model, ElasticSpec(width=(0.5, 1.0)))
    return calibrate(model, SHAPE)


def test_basic_blocks_keep_their_width_and_a_mixed_resnet_is_refused_before_training():
    model = _mixed_resnet()
    assert [label for label in space_of(model).labels if "width" in label] == ["width"]
    with pytest.raises(ValueError, match=r"smallest sub-network of this timm supernet could not "
                                         r"be exported back to timm \(the Bottlenecks are "
                                         r"32/64 of timm's width, but timm's BasicBlock takes "
                                         r"base_width 64 only"):
        check_exportable(model, SHAPE)
    check_exportable(tiny("resnet"), SHAPE)  # a Bottleneck ResNet: every width exports


def test_a_resnet_inside_a_module_names_its_width_after_it():
    torch.manual_seed(0)
    holder = nn.Module()
    holder.backbone = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    with pytest.warns(UserWarning, match="BasicBlock"):
        report = elasticize(holder, ElasticSpec(width=(0.5, 1.0)))
    assert "backbone.width" in report.labels and report.labels.count("backbone.width") == 1


def test_widths_timm_cannot_build_are_left_out_of_the_space():
    with pytest.warns(UserWarning, match=r"blocks\.1\.0 \(InvertedResidual: width 0\.5 "
                                         r"\(20 channels\) left out: timm could not build it"):
        model = tiny("mobilenetv3", ElasticSpec(width=(0.5, 1.0), divisor=4))
    space, x = space_of(model), torch.zeros(1, *SHAPE)
    assert "blocks.1.0.width" not in space.labels
    for sample in (space.smallest(), space.largest()):  # every sample left exports
        timm_definition(extract_subnet(model, sample, x))


def test_only_a_plain_timm_model_and_its_wrappers_export():
    with pytest.raises(ValueError, match="is not and holds no timm MobileNetV3 / EfficientNet"):
        timm_definition(nn.Conv2d(1, 1, 1))
    model = tiny("mobilenetv3")
    subnet = extract_subnet(model, space_of(model).largest(), torch.zeros(1, *SHAPE))
    with pytest.raises(ValueError, match=r"weights outside its timm model '0' \(1\.weight"):
        timm_definition(nn.Sequential(subnet, nn.Linear(10, 2)))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = subnet

        def forward(self, x):
            return self.backbone(2 * x)

    definition = timm_definition(Scaled())
    assert definition["prefix"] == "backbone."
    with pytest.raises(ValueError, match="does more than run its timm model 'backbone'"):
        check_timm(Scaled(), definition, torch.zeros(1, *SHAPE))


def _export(directory, supernet, sample, overwrite=False):
    return export_architecture(directory, supernet,
                               search_result(sample, SHAPE, Cost(macs=1, params=1), score=0.5),
                               overwrite)


def test_the_export_writes_timm_json_and_rebuilds_from_it(tmp_path, capsys):
    module = LitClassifier(tiny("efficientnet"))  # the model inside a LightningModule
    sample = space_of(module).random(random.Random(1))
    _export(tmp_path, module, sample)
    definition = json.loads((tmp_path / TIMM_FILE).read_text())
    assert definition["format"] == "nas_aug.timm/1" and definition["prefix"] == ""
    assert definition["class"] == "timm.models.efficientnet.EfficientNet"
    # the weights are the timm model's alone, under timm's own names
    weights = load_file(str(tmp_path / "subnet.safetensors"))
    assert weights.keys() == build_timm(definition).state_dict().keys()

    arch = load_architecture(tmp_path)
    assert arch.space is None
    net = build_subnet(arch).eval()  # the timm model alone, with the exported weights
    assert type(net) is EfficientNet
    x = torch.randn(3, *SHAPE)
    subnet = extract_subnet(module, sample, x).eval()
    torch.testing.assert_close(net(x), subnet(x), rtol=0, atol=1e-5)
    assert not torch.allclose(build_subnet(arch, weights=False).eval()(x), net(x))

    assert main(["export", str(tmp_path), "--format", "timm", "torchscript", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "timm.json" in out and "subnet.torchscript.pt" in out
    assert json.loads((tmp_path / TIMM_FILE).read_text()) == definition  # left as written

    # re-exported as a sample timm cannot build: the stale timm.json goes, with a warning, and
    # so do the formats written from the old weights
    resnet = _mixed_resnet()
    narrowed = {**space_of(resnet).largest(), "width": 0.5}
    with pytest.raises(FileExistsError, match=r"timm\.json"):
        _export(tmp_path, resnet, narrowed)
    with pytest.warns(UserWarning, match="no timm.json in .*: the Bottlenecks are 32/64"):
        _export(tmp_path, resnet, narrowed, overwrite=True)
    assert not (tmp_path / TIMM_FILE).exists()
    assert not (tmp_path / "subnet.torchscript.pt").exists()
    assert not (tmp_path / "subnet.onnx").exists()
    assert main(["export", str(tmp_path), "--format", "timm"]) == 2
    assert "holds no timm.json" in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["kwargs"].update(num_clases=3), r"timm cannot build the model it defines "
                                                 r"\(TypeError: .*num_clases"),
    (lambda d: d.pop("kwargs"), r"timm cannot build the model it defines \(KeyError"),
])
def test_a_broken_timm_definition_is_named(tmp_path, edit, message):
    module = tiny("mobilenetv3")
    _export(tmp_path, module, space_of(module).smallest())
    definition = json.loads((tmp_path / TIMM_FILE).read_text())
    edit(definition)
    (tmp_path / TIMM_FILE).write_text(json.dumps(definition))
    with pytest.raises(ValueError, match=f"{TIMM_FILE} is not the file written with"):
        load_timm(tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()  # edited by hand: read as it is
    with pytest.raises(ValueError, match=f"{tmp_path / TIMM_FILE}: {message}"):
        load_timm(tmp_path)


def test_the_timm_format_of_a_registered_space(tmp_path, capsys):
    """A registered space's sub-network is built from nas_aug's own modules: no timm.json."""
    supernet = calibrate(create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"]),
                         (1, 8, 8))
    export_architecture(tmp_path, supernet, search_result(
        space_of(supernet).smallest(), (1, 8, 8), Cost(macs=1, params=1), score=0.5))
    assert not (tmp_path / TIMM_FILE).exists()
    assert main(["export", str(tmp_path), "--format", "timm"]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported to timm: the sub-network" in err and "holds no timm" in err


def test_a_registered_timm_space_exports_on_request(tmp_path, capsys, monkeypatch):
    """``--format timm`` writes timm.json for a registered space whose sub-network is timm's."""
    import nas_aug.search_spaces as spaces

    model = tiny("mobilenetv3")
    monkeypatch.setattr(spaces, "create_space", lambda name, **kw: copy.deepcopy(model))
    arch = _export(tmp_path, model, space_of(model).smallest())
    data = json.loads((tmp_path / "architecture.json").read_text())
    data["space"] = "a_timm_space"
    (tmp_path / "architecture.json").write_text(json.dumps(data))
    (tmp_path / TIMM_FILE).unlink()
    (tmp_path / MANIFEST_FILE).unlink()  # edited by hand: read as it is
    assert arch.space is None
    assert main(["export", str(tmp_path), "--format", "timm"]) == 0
    assert (tmp_path / TIMM_FILE).exists() and "max |difference|" in capsys.readouterr().out
