"""Mixed forward: one-hot weights give the plain forward, soft weights a differentiable mixture
computed with the shared weights, and labels that cannot be mixed are refused with a reason."""

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL_SPACES, calibrate
from torch import nn

from nas_aug.search_spaces import create_space, list_spaces
from nas_aug.space import (
    ChoiceModule,
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepth,
    ElasticLinear,
    LayerChoice,
    ValueChoice,
)
from nas_aug.space.mixing import UnmixableError
from nas_aug.supernet import activate, choice_modules, mixed, set_mixing, space_of, unmixable


def one_hot(space, sample) -> dict[str, torch.Tensor]:
    return {label: torch.tensor([float(c == sample[label]) for c in space.candidates(label)])
            for label in space.labels}


def straight_through(logits: dict[str, torch.Tensor], space, sample) -> dict[str, torch.Tensor]:
    """GDAS's hard weights: one-hot in value, the softmax's gradient."""
    hard = one_hot(space, sample)
    return {label: hard[label] - a.softmax(0).detach() + a.softmax(0)
            for label, a in logits.items()}


def plain(net, sample, x):
    set_mixing(net, None)
    activate(net, sample)
    return net(x)


@pytest.fixture(scope="module", params=list_spaces())
def supernet(request):
    net = create_space(request.param, **SMALL_SPACES.get(request.param, {}))
    shape = tuple(net.default_input_shape)
    calibrate(net, shape)
    set_mixing(net, {})  # probes once; the tests below reuse the plan
    return net, torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# the registered spaces --------------------------------------------------------------------------

def test_one_hot_equals_the_plain_forward_for_every_label_and_random_samples(supernet):
    net, x = supernet
    space, rng = space_of(net), random.Random(0)
    samples = [{**space.random(rng), label: value}
               for label in space.labels for value in space.candidates(label)]
    samples += [space.random(rng) for _ in range(10)]
    outputs = set()
    with torch.no_grad():
        for sample in samples:
            expected = plain(net, sample, x)
            set_mixing(net, one_hot(space, sample), space)
            assert torch.allclose(net(x), expected, rtol=0, atol=1e-6), sample
            outputs.add(expected.sum().item())
    assert len(outputs) > len(samples) // 2  # the samples really compute different functions


def test_nearly_one_hot_weights_give_nearly_the_plain_forward(supernet):
    """Every candidate has a weight, so every path is computed at its largest width and masked:
    the mixture proper, not the single path of one-hot weights."""
    net, x = supernet
    space, rng = space_of(net), random.Random(2)
    with torch.no_grad():
        for sample in [space.smallest()] + [space.random(rng) for _ in range(4)]:
            expected = plain(net, sample, x)
            set_mixing(net, {label: (1 - 1e-6) * w + 1e-6 / len(w)
                             for label, w in one_hot(space, sample).items()}, space)
            assert all(len(m.active) == len(space.candidates(m.label))
                       for _, module in choice_modules(net) if module.mixing
                       for m in module.mixing.values())
            assert torch.allclose(net(x), expected, rtol=0, atol=1e-4), sample


def test_one_hot_in_training_mode_matches_outputs_and_statistics(supernet):
    net, x = supernet
    space = space_of(net)
    for sample in (space.smallest(), space.random(random.Random(3))):
        ref, mix = copy.deepcopy(net).train(), copy.deepcopy(net).train()
        expected = plain(ref, sample, x)
        activate(mix, space.largest())  # the weights alone decide the path
        set_mixing(mix, one_hot(space, sample))
        assert torch.allclose(mix(x), expected, rtol=0, atol=1e-6)
        for (key, a), b in zip(ref.state_dict().items(), mix.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), rtol=0, atol=1e-6), key


def test_straight_through_weights_give_the_path_and_reach_every_logit(supernet):
    net, x = supernet
    space = space_of(net)
    sample = {**space.random(random.Random(5)),
              **{label: space.candidates(label)[-1] for label in space.labels
                 if label.endswith("depth")}}  # every block runs: every label is on the path
    # and no edge is cut off (a `none` edge can leave another edge without input)
    sample = {label: space.candidates(label)[-1] if value == "none" else value
              for label, value in sample.items()}
    with torch.no_grad():
        expected = plain(net, sample, x)
    logits = {label: torch.randn(len(space.candidates(label)), requires_grad=True)
              for label in space.labels}
    set_mixing(net, straight_through(logits, space, sample))
    out = net(x)
    assert torch.allclose(out, expected, rtol=0, atol=1e-5)
    (out * torch.randn_like(out)).sum().backward()
    assert [label for label, a in logits.items() if not a.grad.abs().sum() > 0] == []
    set_mixing(net, None)


def test_soft_weights_mix_and_reach_every_weight_tensor(supernet):
    net, x = supernet
    space = space_of(net)
    weights = {label: torch.randn(len(space.candidates(label))).softmax(0).requires_grad_()
               for label in space.labels}
    set_mixing(net, weights)
    out = net(x)
    (out * torch.randn_like(out)).sum().backward()
    assert [label for label, w in weights.items() if not w.grad.abs().sum() > 0] == []
    with torch.no_grad():
        for sample in (space.largest(), space.smallest()):
            assert not torch.allclose(out.detach(), plain(net, sample, x), atol=1e-3)


def test_set_mixing_none_restores_the_active_path_exactly(supernet):
    net, x = supernet
    space = space_of(net)
    sample = space.random(random.Random(7))
    with torch.no_grad():
        before = plain(net, sample, x)
        set_mixing(net, {label: torch.rand(len(space.candidates(label)))
                         for label in space.labels})
        assert not torch.allclose(net(x), before, atol=1e-3)
        set_mixing(net, None)
        assert all(m.mixing is None for _, m in choice_modules(net))
        assert torch.equal(net(x), before)


def test_labels_left_out_keep_their_active_value(supernet):
    net, x = supernet
    space = space_of(net)
    sample = space.random(random.Random(8))
    kept = [label for label in space.labels if "kernel" in label or "head" in label] \
        or list(space.labels[:1])
    with torch.no_grad():
        expected = plain(net, sample, x)
        weights = one_hot(space, sample)
        set_mixing(net, {label: w for label, w in weights.items() if label not in kept})
        assert torch.allclose(net(x), expected, rtol=0, atol=1e-6)
        assert any(m.mixing is None for _, m in choice_modules(net))
    set_mixing(net, None)


# each choice module's mixture --------------------------------------------------------------------

def weights_for(n: int) -> torch.Tensor:
    return torch.randn(n).softmax(0)  # sums to 1, so biases mix to themselves


def mixture_of_plain(net, label, values, weights, x):
    outputs = []
    for value in values:
        activate(net, {**space_of(net).largest(), label: value})
        outputs.append(net(x))
    return sum(w * out for w, out in zip(weights, outputs))


@pytest.mark.parametrize("depthwise", [False, True])
def test_kernel_mixture_is_the_mixture_of_the_centre_crops(depthwise):
    conv = ElasticConv2d(4, 4, ValueChoice("k", [1, 3, 5]), stride=2, depthwise=depthwise,
                         bias=True)
    x, a = torch.randn(2, 4, 7, 7), weights_for(3)
    with torch.no_grad():
        expected = mixture_of_plain(conv, "k", [1, 3, 5], a, x)
        set_mixing(conv, {"k": a}, example_input=x)
        assert torch.allclose(conv(x), expected, atol=1e-5)
        # zero weight on 5: the conv runs at 3x3
        set_mixing(conv, {"k": torch.tensor([0.4, 0.6, 0.0])})
        expected = mixture_of_plain(conv, "k", [1, 3], [0.4, 0.6], x)
        assert torch.allclose(conv(x), expected, atol=1e-5)


def width_net() -> nn.Module:
    width = ValueChoice("w", [2, 5, 8])
    return nn.Sequential(
        ElasticConv2d(3, 8, 3, out_channels_choice=width),
        ElasticBatchNorm2d(8), nn.ReLU(),
        ElasticConv2d(8, 8, 3, depthwise=True), nn.ReLU(),
        ElasticConv2d(8, 5, 1, bias=True, out_channels_choice=width.map(lambda w: w // 2 + 1)),
        nn.Flatten(1), ElasticLinear(5 * 9, 2),
    ).eval()


def test_width_mixture_masks_after_batch_norm_where_the_width_is_read():
    net, x, a = width_net(), torch.randn(2, 3, 3, 3), weights_for(3)
    calibrate(net, (3, 3, 3))
    with torch.no_grad():
        set_mixing(net, {"w": a}, example_input=x)
        # "w" sets the width the 1x1 conv reads, and (mapped, times 3x3) the linear's
        assert net[5].input_width == ("w", (2, 5, 8))
        assert net[7].input_width == ("w", (18, 27, 45))
        assert net[0].input_width is None and net[3].input_width is None
        out = net(x)
        # FBNetV2's mixture at full width: batch norm and activations, then the mask
        hidden = net[4](net[3](net[2](net[1](F.conv2d(x, net[0].weight, padding=1)))))
        mask = sum(w * (torch.arange(8) < width) for w, width in zip(a, (2, 5, 8)))
        y = F.conv2d(hidden * mask[:, None, None], net[5].weight, net[5].bias).flatten(1)
        mask = sum(w * (torch.arange(45) < width) for w, width in zip(a, (18, 27, 45)))
        assert torch.allclose(out, F.linear(y * mask, net[7].weight, net[7].bias), atol=1e-6)
        assert not torch.allclose(out, F.linear(y, net[7].weight, net[7].bias), atol=1e-3)
        # with softmax weights (summing to 1) it is the mixture of the plain forwards
        assert torch.allclose(out, mixture_of_plain(net, "w", (2, 5, 8), a, x), atol=1e-5)


def test_depth_and_layer_choice_mixtures_are_weighted_sums():
    blocks = [nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(3)]
    net = nn.Sequential(
        ElasticDepth("d", blocks),
        LayerChoice("op", {"fc": nn.Linear(4, 4), "id": nn.Identity(), "sin": nn.Softsign()}),
    )
    x, ad, aop = torch.randn(5, 4), weights_for(3), weights_for(3)
    with torch.no_grad():
        set_mixing(net, {"d": ad, "op": aop}, example_input=x)
        out = net(x)
        after = [x]
        for block in blocks:
            after.append(block(after[-1]))
        stage = sum(w * h for w, h in zip(ad, after[1:]))
        ops = net[1].candidates
        expected = sum(w * op(stage) for w, op in zip(aop, (ops["fc"], ops["id"], ops["sin"])))
        assert torch.allclose(out, expected, atol=1e-6)


class Counting(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale, self.calls = scale, 0

    def forward(self, x):
        self.calls += 1
        return x * self.scale


def test_hard_weights_compute_only_the_chosen_candidates():
    ops = {"a": Counting(2.0), "b": Counting(3.0), "c": Counting(5.0)}
    blocks = [Counting(1.0) for _ in range(3)]
    net = nn.Sequential(LayerChoice("op", ops), ElasticDepth("d", blocks))
    x = torch.ones(2, 3)
    set_mixing(net, {}, example_input=x)
    for module in [*ops.values(), *blocks]:
        module.calls = 0
    logits = {"op": torch.zeros(3, requires_grad=True), "d": torch.zeros(3, requires_grad=True)}
    hard = {"op": torch.tensor([0.0, 1.0, 0.0]), "d": torch.tensor([1.0, 0.0, 0.0])}
    set_mixing(net, {k: hard[k] - a.softmax(0).detach() + a.softmax(0)
                     for k, a in logits.items()})
    out = net(x)
    assert torch.allclose(out, 3 * x)
    assert [m.calls for m in ops.values()] == [0, 1, 0]
    assert [m.calls for m in blocks] == [1, 0, 0]  # depth 1: the later blocks are skipped
    out.sum().backward()  # GDAS: the gradient reaches the logits through the chosen weight
    assert logits["op"].grad.abs().sum() > 0 and logits["d"].grad.abs().sum() > 0


def test_mixed_restores_the_previous_state_and_copies_keep_mixing():
    net = width_net()
    x = torch.randn(2, 3, 3, 3)
    with torch.no_grad():
        before = net(x)
        set_mixing(net, {"w": torch.tensor([0.2, 0.3, 0.5])}, example_input=x)
        outer = net(x)
        with mixed(net, {"w": torch.tensor([1.0, 0.0, 0.0])}):
            inner = net(x)
        assert torch.equal(net(x), outer) and not torch.allclose(inner, outer)
    logits = torch.zeros(3, requires_grad=True)
    set_mixing(net, {"w": logits.softmax(0)})  # weights with a graph survive a deep copy
    assert torch.equal(copy.deepcopy(net)(x), net(x))
    set_mixing(net, None)
    assert torch.equal(net(x), before)


# what is refused ----------------------------------------------------------------------------------

def small_net() -> nn.Module:
    return nn.Sequential(
        ElasticConv2d(2, 4, ValueChoice("kernel", [1, 3]),
                      out_channels_choice=ValueChoice("width", [2, 4])),
        nn.ReLU(), ElasticConv2d(4, 3, 1),
    )


@pytest.mark.parametrize("weights, message", [
    ({"kernal": torch.ones(2)}, r"unknown label 'kernal' \(did you mean 'kernel'\?\); labels "
                                r"are \['kernel', 'width'\]"),
    ({"width": torch.ones(3)}, r"weights\['width'\] = tensor\(\[1., 1., 1.\]\) of shape \(3,\): "
                               r"expected a 1-D floating-point tensor of 2 weights, one per "
                               r"candidate of \[2, 4\]"),
    ({"width": torch.ones(1, 2)}, r"weights\['width'\] = tensor\(\[\[1., 1.\]\]\) of shape "
                                  r"\(1, 2\): expected a 1-D"),
    ({"kernel": torch.tensor([1, 0])}, r"weights\['kernel'\] = tensor\(\[1, 0\]\) of shape \(2,\): "
                                       r"expected a 1-D floating-point tensor"),
    ({"kernel": [0.5, 0.5]}, r"weights\['kernel'\] = \[0.5, 0.5\]: expected a 1-D"),
    ({"kernel": torch.zeros(2)}, r"weights\['kernel'\] are all zero"),
    ([("kernel", torch.ones(2))], r"weights are a \{label: tensor\} dict, got list"),
])
def test_bad_weights_are_named(weights, message):
    net = small_net()
    with pytest.raises(ValueError, match=message):
        set_mixing(net, weights, example_input=torch.randn(1, 2, 4, 4))
    assert all(m.mixing is None for _, m in choice_modules(net))


def test_no_example_input_and_no_default_shape():
    with pytest.raises(ValueError, match=r"Sequential records no input shape \(its "
                                         r"SupernetInfo\): pass example_input"):
        set_mixing(small_net(), {"kernel": torch.ones(2)})


class OutsideMean(nn.Module):
    """Reads the mixed width outside any choice module: a channel mean."""

    def __init__(self):
        super().__init__()
        self.conv = ElasticConv2d(2, 4, 1, out_channels_choice=ValueChoice("width", [2, 4]))

    def forward(self, x):
        return self.conv(x).mean(1)


class Coin(ChoiceModule):
    """A choice module with no mixed forward."""

    def __init__(self):
        super().__init__()
        self.choice, self.flip = ValueChoice("coin", [False, True]), True

    def choices(self):
        return [self.choice]

    def activate(self, sample):
        self.flip = sample["coin"]

    def forward(self, x):
        return -x if self.flip else x


def joint_width_net() -> nn.Module:  # after the stage, the width is "a"'s or "b"'s by depth
    return nn.Sequential(
        ElasticDepth("depth", [ElasticLinear(4, 6, out_features_choice=ValueChoice("a", [2, 6])),
                               ElasticLinear(6, 8, out_features_choice=ValueChoice("b", [3, 8]))]),
        ElasticLinear(8, 2),
    )


@pytest.mark.parametrize("build, x, label, why", [
    (lambda: LayerChoice("op", {"conv": nn.Conv2d(2, 3, 1), "id": nn.Identity()}),
     torch.randn(1, 2, 3, 3), "op", r"its candidates give outputs of different shapes "
                                    r"\[\(1, 2, 3, 3\), \(1, 3, 3, 3\)\]"),
    (lambda: ElasticLinear(3, 4, out_features_choice=ValueChoice("width", [2, 4])),
     torch.randn(1, 3), "width", r"it sets the shape of the supernet's output"),
    (OutsideMean, torch.randn(1, 2, 3, 3), "width",
     r"one-hot weights do not give the plain forward: does an operation outside the choice "
     r"modules read a width it sets\?"),
    (lambda: nn.Sequential(nn.Linear(2, 2), Coin()), torch.randn(1, 2), "coin",
     r"1 \(Coin\) has no mixed forward"),
    (joint_width_net, torch.randn(1, 4), "depth",
     r"the input width of 1 depends on \['depth', 'b'\]"),
])
def test_labels_that_cannot_be_mixed_are_refused_with_the_reason(build, x, label, why):
    net = build()
    space = space_of(net)
    with pytest.raises(UnmixableError, match=f"label '{label}' cannot be mixed differentiably: "
                                             f"{why}.*sampling strategy .*SPOS") as err:
        set_mixing(net, {label: torch.ones(len(space.candidates(label)))}, example_input=x)
    assert isinstance(err.value, ValueError) and err.value.label == label
    assert all(m.mixing is None for _, m in choice_modules(net))
    # the other labels still mix
    others = [other for other in space.labels if other not in unmixable(net)]
    set_mixing(net, {other: torch.ones(len(space.candidates(other))) for other in others})
    net(x)


def test_a_width_reader_inside_an_unchosen_layer_candidate_masks_its_input():
    """The first candidate does not run under the largest sample, where widths are probed; it
    is probed with itself chosen."""
    width = ValueChoice("w", [2, 4])
    net = nn.Sequential(
        ElasticConv2d(1, 4, 3, out_channels_choice=width), nn.ReLU(),
        LayerChoice("op", [ElasticConv2d(4, 4, 3, out_channels_choice=width), nn.Identity()]),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), ElasticLinear(4, 3))
    x = torch.randn(2, 1, 6, 6)
    space = space_of(net)
    with torch.no_grad():
        for w in (2, 4):
            for op in (0, 1):
                sample = {"w": w, "op": op}
                expected = plain(net, sample, x)
                set_mixing(net, {label: torch.ones(len(space.candidates(label))) * 0.5
                                 for label in space.labels}, space, example_input=x)
                set_mixing(net, one_hot(space, sample), space)
                assert torch.allclose(net(x), expected, rtol=0, atol=1e-6), sample
