import random
import re

import pytest
import torch
from helpers import SMALL_SPACES, calibrate
from torch import nn

from nas_aug.search_spaces import create_space, list_spaces
from nas_aug.space import ChoiceModule
from nas_aug.supernet import activate, choice_modules, extract_subnet, space_of


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    net = create_space(name, **SMALL_SPACES.get(name, {}))
    shape = tuple(net.default_input_shape)
    return calibrate(net, shape), shape


def state_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", list_spaces())
def test_subnet_equals_the_active_supernet(name):
    net, shape = build(name)
    space = space_of(net)
    rng = random.Random(0)
    x = torch.randn(3, *shape)
    samples = [space.smallest(), space.largest()] + [space.random(rng) for _ in range(4)]
    outputs = []
    for sample in samples:
        subnet = extract_subnet(net, sample, x[:1]).eval()
        activate(net, sample)
        with torch.no_grad():
            expected, got = net(x), subnet(x)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert choice_modules(subnet) == []
        assert not any(isinstance(m, ChoiceModule) for m in subnet.modules())
        outputs.append(expected)
    # the comparison means something: different samples compute different functions
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)


@pytest.mark.parametrize("name", list_spaces())
def test_extraction_leaves_the_supernet_unchanged(name):
    net, shape = build(name)
    space = space_of(net)
    active = space.random(random.Random(1))
    activate(net, active)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        before_out = net(x)
    before = state_copy(net)
    params = list(net.parameters())
    for seed in range(3):
        net.train()  # extraction from a training-mode supernet must not touch its statistics
        subnet = extract_subnet(net, space.random(random.Random(seed + 10)), x[:1])
        net.eval()
        after = net.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before)
        assert all(a is b for a, b in zip(net.parameters(), params))
        supernet_ptrs = {t.untyped_storage().data_ptr() for t in net.state_dict().values()}
        subnet_ptrs = {t.untyped_storage().data_ptr() for t in subnet.state_dict().values()}
        assert supernet_ptrs.isdisjoint(subnet_ptrs)
    with torch.no_grad():
        assert torch.equal(net(x), before_out)  # the active sample is still the same
    assert len(choice_modules(net)) > 0


@pytest.mark.parametrize("name", list_spaces())
def test_subnet_keeps_the_supernet_mode(name):
    net, shape = build(name)
    sample = space_of(net).random(random.Random(2))
    subnet = extract_subnet(net.eval(), sample, torch.zeros(1, *shape))
    assert [n for n, m in subnet.named_modules() if m.training] == []
    subnet = extract_subnet(net.train(), sample, torch.zeros(1, *shape))
    assert [n for n, m in subnet.named_modules() if not m.training] == []


def test_training_the_subnet_leaves_the_supernet_alone():
    net, shape = build("mobilenet_tiny")
    before = state_copy(net)
    subnet = extract_subnet(net, space_of(net).smallest(), torch.zeros(1, *shape)).train()
    optimizer = torch.optim.SGD(subnet.parameters(), lr=0.1)
    subnet(torch.randn(4, *shape)).sum().backward()
    optimizer.step()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("img_size", [8, 32])
def test_mobilenet_tiny_input_sizes(img_size):
    net = create_space("mobilenet_tiny", **{**SMALL_SPACES["mobilenet_tiny"], "img_size": img_size})
    net = calibrate(net, (1, img_size, img_size))
    space = space_of(net)
    for seed in range(2):
        sample = space.random(random.Random(seed))
        subnet = extract_subnet(net, sample, torch.zeros(1, 1, img_size, img_size)).eval()
        activate(net, sample)
        for size in (8, 32):  # the extracted network is not tied to the example's size
            x = torch.randn(2, 1, size, size)
            with torch.no_grad():
                expected = net(x)
                assert expected.shape == (2, 10)
                assert torch.allclose(subnet(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_spaces())
def test_invalid_sample_names_the_label(name):
    net, shape = build(name)
    space = space_of(net)
    label = space.labels[0]
    x = torch.zeros(1, *shape)
    bad_value = {**space.largest(), label: "not-a-candidate"}
    with pytest.raises(ValueError, match=rf"{re.escape(label)}='not-a-candidate' is not one of"):
        extract_subnet(net, bad_value, x)
    missing = {k: v for k, v in space.largest().items() if k != label}
    with pytest.raises(ValueError, match=rf"missing labels \['{re.escape(label)}'\]"):
        extract_subnet(net, missing, x)
    unknown = {**space.largest(), label + "x": 1}
    escaped = re.escape(label)
    with pytest.raises(ValueError, match=rf"unknown label '{escaped}x'.*did you mean '{escaped}'"):
        extract_subnet(net, unknown, x)
