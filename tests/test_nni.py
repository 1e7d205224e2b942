"""NNI 3.0 spaces: converted to nas_aug choice modules, searched, and taken back to NNI.

Skipped only where NNI is not installed (``pip install 'nas_aug[nni]'``; ``make test``
installs it with the dev extra); the core's independence from NNI is tested either way.
"""

import copy
import importlib.util
import json
import random
import subprocess
import sys

import pytest
import torch
from helpers import LitClassifier, make_trainer
from torch import nn

from nas_aug.cli import main
from nas_aug.data import DigitsDataModule
from nas_aug.space import LayerChoice as NasAugLayerChoice
from nas_aug.supernet import extract_subnet, space_of, supernet_info

HAVE_NNI = importlib.util.find_spec("nni") is not None
needs_nni = pytest.mark.skipif(not HAVE_NNI, reason="NNI is not installed (the nas_aug[nni] "
                               "extra); make test installs it")

if HAVE_NNI:
    import nni
    from nni.nas.nn.pytorch import (
        InputChoice,
        LayerChoice,
        ModelSpace,
        MutableBatchNorm2d,
        MutableConv2d,
        MutableDropout,
        MutableLinear,
        Repeat,
    )

    from nas_aug.callbacks import OneShotNAS
    from nas_aug.formats import export_format
    from nas_aug.nni import Unconvertible, from_nni, load_nni_subnet

    class NNINet(ModelSpace):
        """Every converted kind: a kernel choice padded by an expression, widths (one an
        expression), a depthwise conv with mutable groups, a list layer choice, a depth range,
        linear widths, a fixed Mutable* layer."""

        def __init__(self):
            super().__init__()
            width, kernel = nni.choice("width", [8, 16]), nni.choice("kernel", [3, 5])
            self.stem = MutableConv2d(1, width, kernel, padding=kernel // 2, bias=False)
            self.bn = MutableBatchNorm2d(width)
            self.op = LayerChoice([MutableConv2d(width, width, 3, padding=1, groups=width),
                                   nn.Identity()], label="op")
            self.stage = Repeat(lambda i: nn.Sequential(
                MutableConv2d(width, width, 3, padding=1), nn.ReLU()), (1, 3), label="depth")
            self.expand = MutableConv2d(width, width * 2, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            hidden = nni.choice("hidden", [16, 32])
            self.fc1 = MutableLinear(width * 2, hidden)
            self.fc2 = MutableLinear(hidden, 10)
            self.scale = MutableConv2d(1, 1, 1)  # fixed arguments: a plain conv

        def forward(self, x):
            x = torch.relu(self.bn(self.stem(x * self.scale.weight.sum())))
            x = self.expand(self.stage(self.op(x)))
            return self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1))))


@needs_nni
def test_the_converted_space_has_nni_s_labels_and_values():
    converted = from_nni(NNINet())
    nni_space = NNINet().simplify()
    ours = space_of(converted)
    assert set(ours.labels) == set(nni_space) == set(supernet_info(converted).labels)
    for label, choice in nni_space.items():
        assert sorted(ours.candidates(label)) == sorted(choice.values), label
    assert not any(type(m).__module__.startswith("nni.") for m in converted.modules()
                   if m is not converted)  # only the user's own ModelSpace class stays


@needs_nni
def test_every_sub_network_is_the_one_nni_freezes_with_the_same_weights():
    converted = from_nni(NNINet()).eval()
    space = space_of(converted)
    rng = random.Random(0)
    samples = [space.smallest(), space.largest(), *(space.random(rng) for _ in range(6))]
    x = torch.randn(3, 1, 8, 8)
    for sample in samples:
        subnet = extract_subnet(converted, sample, x[:1]).eval()
        nni_model = NNINet().freeze(sample).eval()
        nni_model.load_state_dict(subnet.state_dict())  # strict: same names and shapes
        torch.testing.assert_close(nni_model(x), subnet(x), rtol=0, atol=0)


@needs_nni
@pytest.mark.parametrize("strategy", ["spos", "darts"])
def test_one_shot_nas_searches_an_nni_space_and_exports_its_samples(strategy, tmp_path,
                                                                    capsys):
    """The LightningModule holds the NNI space unconverted; the callback converts it."""
    model = LitClassifier(NNINet())
    options = dict(generations=2, population_size=4) if strategy == "spos" else {}
    callback = OneShotNAS(strategy=strategy, export_dir=tmp_path, input_shape=(1, 8, 8),
                          calibration_batches=1, progress=False, **options)
    make_trainer([callback], limit_train_batches=3).fit(model,
                                                        datamodule=DigitsDataModule())
    assert isinstance(model.backbone.op, NasAugLayerChoice)
    arch = json.loads((tmp_path / "architecture.json").read_text())
    samples = json.loads((tmp_path / "nni_samples.json").read_text())
    assert samples[0] == arch["sample"] and len(samples) == len({json.dumps(s) for s in samples})

    # NNI builds the exported architecture from its own code and takes the trained weights
    nni_model = load_nni_subnet(NNINet(), tmp_path).eval()
    ours = extract_subnet(model.backbone, arch["sample"], torch.zeros(1, 1, 8, 8)).eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(nni_model(x), ours(x), rtol=0, atol=0)
    path, difference = export_format(tmp_path, "onnx", subnet=nni_model)
    assert path.exists() and difference < 1e-4
    with pytest.raises(ValueError, match="load_nni_subnet"):
        export_format(tmp_path, "onnx")  # nas_aug alone cannot rebuild the user's space

    # nas-aug show names the space's class and lists the choices it cannot build into stages
    assert main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"NNINet (converted NNI space), searched by {strategy}: held-out")
    width = max(map(len, arch["sample"]))
    assert out[1:-1] == [f"  {label:{width}}  {value}" for label, value in arch["sample"].items()]
    assert "no table of stages" in out[-1] and "load_nni_subnet" in out[-1]


@needs_nni
def test_every_feature_that_does_not_convert_is_named_and_the_model_is_left_as_it_was():
    class Unsupported(ModelSpace):
        def __init__(self):
            super().__init__()
            a = nni.choice("a", [4, 8])
            self.continuous = MutableConv2d(1, nni.quniform("q", 2, 8, 2).int(), 1)
            self.dilated = MutableConv2d(1, a, 3, padding=2, dilation=2)
            self.drop = MutableDropout(nni.choice("p", [0.1, 0.2]))
            self.inputs = InputChoice(2, 1, label="in")
            self.zero_depth = Repeat(nn.ReLU(), (0, 2), label="depth")
            self.prior = LayerChoice([nn.ReLU(), nn.Tanh()], weights=[0.9, 0.1], label="act")
            self.rate = self.add_mutable(nni.choice("rate", [1, 2]))

    net = Unsupported()
    before = copy.deepcopy(net.state_dict()), [type(m) for m in net.modules()]
    with pytest.raises(Unconvertible) as err:
        from_nni(net)
    message = str(err.value)
    for expected in ("continuous (MutableConv2d): out_channels depends on ['q'], which are "
                     "not nni.choice values",
                     "dilated (MutableConv2d)", "dilation=2",
                     "drop (MutableDropout): its argument(s) ['p'] are choices",
                     "inputs (InputChoice): an NNI module nas_aug has no counterpart for",
                     "zero_depth (Repeat): its depth takes [0, 1, 2]",
                     "prior (LayerChoice): label 'act' has prior weights",
                     "the model (Unsupported): values ['rate'] registered with add_mutable"):
        assert expected in message, (expected, message)
    assert [type(m) for m in net.modules()] == before[1]
    assert all(torch.equal(v, before[0][k]) for k, v in net.state_dict().items())


@needs_nni
def test_a_width_computed_from_several_labels_is_searched_by_sampling_not_mixed(tmp_path):
    class Product(ModelSpace):
        def __init__(self):
            super().__init__()
            width, expand = nni.choice("width", [4, 8]), nni.choice("expand", [1, 2])
            self.stem = MutableConv2d(1, width, 3, padding=1)
            self.expand = MutableConv2d(width, width * expand, 1)
            self.fc = MutableLinear(width * expand, 10)

        def forward(self, x):
            return self.fc(self.expand(self.stem(x)).mean((2, 3)))

    net = from_nni(Product()).eval()
    x = torch.randn(2, 1, 8, 8)
    for sample in ({"width": 4, "expand": 2}, {"width": 8, "expand": 1}):
        subnet = extract_subnet(net, sample, x[:1])
        assert subnet.expand.out_channels == sample["width"] * sample["expand"]
        nni_model = Product().freeze(sample)
        nni_model.load_state_dict(subnet.state_dict())
        torch.testing.assert_close(nni_model(x), subnet(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"label 'width' cannot be mixed .* depends on "
                                         r"\['width', 'expand'\]"):
        make_trainer([OneShotNAS(strategy="darts", input_shape=(1, 8, 8), progress=False)]).fit(
            LitClassifier(Product()), datamodule=DigitsDataModule())


@needs_nni
def test_nni_s_own_model_spaces_convert_to_the_networks_nni_freezes():
    from nni.nas.hub.pytorch import MobileNetV3Space, ShuffleNetSpace

    x = torch.randn(2, 3, 32, 32)
    for space_class in (ShuffleNetSpace, MobileNetV3Space):
        net = from_nni(space_class()).eval()
        space = space_of(net)
        for sample in (space.smallest(), space.random(random.Random(0))):
            subnet = extract_subnet(net, sample, x[:1]).eval()
            nni_model = space_class().freeze(sample).eval()
            nni_model.load_state_dict(subnet.state_dict())
            torch.testing.assert_close(nni_model(x), subnet(x), rtol=0, atol=1e-6)


@needs_nni
def test_layer_choice_with_named_candidates_keeps_the_names():
    class Named(ModelSpace):
        def __init__(self):
            super().__init__()
            self.act = LayerChoice({"relu": nn.ReLU(), "tanh": nn.Tanh()}, label="act")

        def forward(self, x):
            return self.act(x)

    net = from_nni(Named())
    assert space_of(net).candidates("act") == ("relu", "tanh")
    x = torch.linspace(-2, 2, 5)
    for name in ("relu", "tanh"):
        assert torch.equal(extract_subnet(net, {"act": name}, x)(x), Named().freeze(
            {"act": name})(x))


def test_the_core_never_imports_nni():
    code = ("import sys, nas_aug, nas_aug.callbacks, nas_aug.search_spaces, nas_aug.recipe, "
            "nas_aug.cli, nas_aug.formats; assert 'nni' not in sys.modules, 'nni imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
