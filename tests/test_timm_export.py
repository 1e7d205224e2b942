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
from timm.models import EfficientNet, MobileNetV3
from torch import nn

from nas_aug import ElasticSpec, build_subnet, elasticize, load_architecture
from nas_aug.cli import main
from nas_aug.constraints import Cost
from nas_aug.elastic_models import build_timm, timm_definition
from nas_aug.elastic_models._timm import decode_arch_def
from nas_aug.elastic_models.timm_export import check_timm
from nas_aug.export import TIMM_FILE, export_architecture
from nas_aug.search_spaces import create_space
from nas_aug.supernet import extract_subnet, space_of

SHAPE = (1, 32, 32)
FAMILIES = {
    "mobilenetv3": ("mobilenetv3_small_050", {}),  # ds + ir (se from expanded width) + cn
    "efficientnet": ("test_efficientnet", {"depth_multiplier": 2}),  # cn, er, ir (se from input)
    "resnet": ("test_resnet", {"layers": (2, 2, 2, 2), "zero_init_last": False}),
}


def tiny(family: str, spec: ElasticSpec | None = None) -> nn.Module:
    """A calibrated tiny timm model of ``family``, elasticized, in eval mode."""
    name, options = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, in_chans=1, **options)
    elasticize(model, spec)
    return calibrate(model, SHAPE)


def rebuilt(subnet: nn.Module) -> nn.Module:
    """timm's model of ``subnet``'s definition (through JSON), with its weights (strict)."""
    definition = json.loads(json.dumps(timm_definition(subnet)))
    net = build_timm(definition)
    net.load_state_dict(subnet.state_dict())
    return net.eval()


@pytest.mark.parametrize("family", ["mobilenetv3", "efficientnet"])
def test_samples_rebuild_in_timm_with_equal_outputs(family):
    model = tiny(family)
    space, x, rng = space_of(model), torch.randn(4, *SHAPE), random.Random(0)
    definitions = []
    for sample in [space.largest(), space.smallest(), *(space.random(rng) for _ in range(4))]:
        subnet = extract_subnet(model, sample, x).eval()
        net = rebuilt(subnet)
        assert type(net) is {"mobilenetv3": MobileNetV3, "efficientnet": EfficientNet}[family]
        torch.testing.assert_close(net(x), subnet(x), rtol=0, atol=1e-5)
        definitions.append(timm_definition(subnet)["block_args"])
    assert len({json.dumps(d) for d in definitions}) == len(definitions)  # samples differ


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


def test_resnet_depth_samples_export_and_narrowed_widths_are_refused():
    model = tiny("resnet")
    space, x = space_of(model), torch.randn(2, *SHAPE)
    depth_only = {label: (space.candidates(label)[0] if label.endswith(".depth")
                          else space.candidates(label)[-1]) for label in space.labels}
    subnet = extract_subnet(model, depth_only, x).eval()
    net = rebuilt(subnet)
    assert timm_definition(subnet)["kwargs"]["layers"] == [1, 1, 1, 1]
    torch.testing.assert_close(net(x), subnet(x), rtol=0, atol=1e-5)
    narrowed = extract_subnet(model, {**depth_only, "layer2.0.width": 0.5}, x)
    with pytest.raises(ValueError, match=r"layer2\.0 is 24 channels wide inside, where timm's "
                                         r"ResNet makes every BasicBlock of layer2 48 wide"):
        timm_definition(narrowed)


def test_widths_timm_cannot_round_to_are_refused():
    model = tiny("mobilenetv3", ElasticSpec(width=(0.5, 1.0), divisor=4))
    subnet = extract_subnet(model, space_of(model).smallest(), torch.zeros(1, *SHAPE))
    with pytest.raises(ValueError, match=r"blocks\.1\.0 has 20 expanded channels from 8 input "
                                         r"channels: timm rounds the expanded width to a "
                                         r"multiple of 8"):
        timm_definition(subnet)


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


def _export(directory, supernet, sample):
    return export_architecture(directory, supernet,
                               search_result(sample, SHAPE, Cost(macs=1, params=1), score=0.5))


def test_the_export_writes_timm_json_and_rebuilds_from_it(tmp_path, capsys):
    module = LitClassifier(tiny("efficientnet"))  # the model inside a LightningModule
    sample = space_of(module).random(random.Random(1))
    _export(tmp_path, module, sample)
    definition = json.loads((tmp_path / TIMM_FILE).read_text())
    assert definition["format"] == "nas_aug.timm/1" and definition["prefix"] == "backbone."

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

    # re-exported as a sample timm cannot build: the stale timm.json goes, with a warning
    resnet = tiny("resnet")
    narrowed = {**space_of(resnet).largest(), "layer1.0.width": 0.5}
    with pytest.warns(UserWarning, match="no timm.json in .*: layer1.0 is 16 channels wide"):
        _export(tmp_path, resnet, narrowed)
    assert not (tmp_path / TIMM_FILE).exists()
    assert main(["export", str(tmp_path), "--format", "timm"]) == 2
    assert "holds no timm.json" in capsys.readouterr().err


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
    assert arch.space is None
    assert main(["export", str(tmp_path), "--format", "timm"]) == 0
    assert (tmp_path / TIMM_FILE).exists() and "max |difference|" in capsys.readouterr().out
