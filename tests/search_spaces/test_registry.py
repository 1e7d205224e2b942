import json
import random

import pytest
import torch
from helpers import SMALL_SPACES

from nas_aug.search_spaces import create_space, list_spaces
from nas_aug.supernet import activate, choice_modules, space_of


def test_the_catalogue_is_not_empty():
    names = list_spaces()
    assert "mobilenet_tiny" in names
    assert names == sorted(names)


@pytest.mark.parametrize("name", list_spaces())
def test_every_space_builds_and_runs_random_samples(name):
    kwargs = SMALL_SPACES.get(name, {})
    net = create_space(name, **kwargs).eval()
    assert net.space_name == name
    assert net.space_kwargs == kwargs
    json.dumps(net.space_kwargs)  # goes into the export as is
    assert choice_modules(net)
    space = space_of(net)
    assert len(space) > 1
    shape = tuple(net.default_input_shape)
    x = torch.randn(2, *shape)
    rng = random.Random(0)
    outputs = {}
    for sample in [space.smallest(), space.largest()] + [space.random(rng) for _ in range(3)]:
        assert activate(net, sample) == space.validate(sample)
        with torch.no_grad():
            out = net(x)
        assert out.shape[0] == 2 and torch.isfinite(out).all()
        outputs[tuple(out.shape)] = out
    assert len(outputs) == 1  # every sample has the same output shape


def test_mobilenet_tiny_kwargs_shape_the_space():
    net = create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"])
    assert net.default_input_shape == (1, 8, 8)
    space = space_of(net)
    assert space.candidates("stage0.block0.expand") == (3, 6)
    assert space.candidates("stage3.block2.kernel") == (3, 5)
    assert space.candidates("head.width") == (96, 128)
    assert space.candidates("stage0.depth") == (1, 2)
    assert space.candidates("stage1.depth") == (1, 2, 3)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_list_spaces_pattern():
    assert list_spaces("mobile*") == ["mobilenet_tiny"]
    assert list_spaces("*tiny") == ["mobilenet_tiny"]
    assert list_spaces("no_such_*") == []


def test_unknown_space_lists_names_and_suggests():
    with pytest.raises(ValueError) as err:
        create_space("mobilenet_tyni")
    message = str(err.value)
    assert "unknown space 'mobilenet_tyni'" in message
    assert "did you mean 'mobilenet_tiny'?" in message
    assert str(list_spaces()) in message


def test_unknown_argument_lists_accepted_ones():
    with pytest.raises(ValueError) as err:
        create_space("mobilenet_tiny", img_sise=8)
    message = str(err.value)
    assert "['img_sise']" in message
    for accepted in ("num_classes", "in_chans", "img_size", "expand_ratios", "kernel_sizes"):
        assert accepted in message


def test_non_json_argument_is_rejected():
    with pytest.raises(ValueError, match="JSON"):
        create_space("mobilenet_tiny", kernel_sizes={3, 5})
    with pytest.raises(ValueError, match="JSON"):
        create_space("mobilenet_tiny", num_classes=torch.tensor(10))


@pytest.mark.parametrize("img_size", [4, 7, 33, 64])
def test_mobilenet_tiny_image_size_range(img_size):
    with pytest.raises(ValueError, match=rf"img_size={img_size} is outside 8..32"):
        create_space("mobilenet_tiny", img_size=img_size)


@pytest.mark.parametrize("img_size", [8, 32])
def test_mobilenet_tiny_image_size_bounds_are_allowed(img_size):
    net = create_space("mobilenet_tiny", in_chans=1, img_size=img_size, expand_ratios=(3,),
                       kernel_sizes=(3,))
    assert net.default_input_shape == (1, img_size, img_size)


@pytest.mark.parametrize("kernel_sizes", [(3, 4), (2,), ()])
def test_mobilenet_tiny_needs_odd_kernels(kernel_sizes):
    with pytest.raises(ValueError) as err:
        create_space("mobilenet_tiny", kernel_sizes=kernel_sizes)
    assert f"kernel_sizes={kernel_sizes!r}" in str(err.value)
    assert "odd integers" in str(err.value)


@pytest.mark.parametrize("kwargs, what", [
    ({"expand_ratios": (0, 3)}, "expand_ratios"),
    ({"head_widths": (64, -1)}, "head_widths"),
])
def test_mobilenet_tiny_other_bad_tuples(kwargs, what):
    with pytest.raises(ValueError, match=what):
        create_space("mobilenet_tiny", **kwargs)
