import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_aug.space import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepth,
    ElasticLinear,
    LayerChoice,
    ValueChoice,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def conv(**kw) -> ElasticConv2d:
    kw = {"kernel_size": ValueChoice("k", [3, 5]),
          "out_channels_choice": ValueChoice("w", [4, 8]), **kw}
    return ElasticConv2d(6, 8, **kw)


# ElasticConv2d --------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("w", [4, 8])
@pytest.mark.parametrize("in_chs", [3, 6])
def test_conv_output_shape_follows_width_and_input(k, w, in_chs):
    layer = conv()
    layer.activate({"k": k, "w": w})
    assert layer(torch.randn(2, in_chs, 7, 7)).shape == (2, w, 7, 7)


def test_conv_stride_keeps_same_padding():
    layer = conv(stride=2)
    for k in (3, 5):
        layer.activate({"k": k, "w": 4})
        assert layer(torch.randn(1, 6, 8, 8)).shape == (1, 4, 4, 4)


def test_conv_largest_path_is_the_plain_conv():
    layer = conv(bias=True)
    x = torch.randn(2, 6, 7, 7)
    expected = F.conv2d(x, layer.weight, layer.bias, padding=2)
    assert torch.allclose(layer(x), expected, atol=1e-6)  # largest is active by default


def test_conv_kernel3_is_the_centre_of_the_5x5_weight():
    layer = conv(bias=True)
    layer.activate({"k": 3, "w": 4})
    x = torch.randn(2, 5, 7, 7)
    centre = layer.weight[:4, :5, 1:4, 1:4]
    expected = F.conv2d(x, centre, layer.bias[:4], padding=1)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    # not the corner, which would give a different answer
    corner = F.conv2d(x, layer.weight[:4, :5, :3, :3], layer.bias[:4], padding=1)
    assert not torch.allclose(layer(x), corner, atol=1e-3)


def test_conv_paths_share_one_weight_storage():
    layer = conv(bias=True)
    params = list(layer.parameters())
    ptrs = [p.data_ptr() for p in params]
    assert len(params) == 2  # one weight, one bias for every path
    for sample in ({"k": 3, "w": 4}, {"k": 5, "w": 8}, {"k": 3, "w": 8}):
        layer.activate(sample)
        layer(torch.randn(1, 6, 5, 5))
        assert all(a is b for a, b in zip(layer.parameters(), params))
        assert [p.data_ptr() for p in layer.parameters()] == ptrs
        weight, bias, _, _ = layer._active(6)
        assert weight.untyped_storage().data_ptr() == layer.weight.untyped_storage().data_ptr()
        assert bias.untyped_storage().data_ptr() == layer.bias.untyped_storage().data_ptr()


def test_conv_small_path_gradient_lands_in_the_shared_centre_only():
    layer = conv(bias=True)
    layer.activate({"k": 3, "w": 4})
    layer(torch.randn(2, 3, 6, 6)).square().sum().backward()
    grad = layer.weight.grad
    assert grad.shape == layer.weight.shape
    used = torch.zeros_like(grad, dtype=torch.bool)
    used[:4, :3, 1:4, 1:4] = True
    assert (grad[used] != 0).all()
    assert (grad[~used] == 0).all()
    assert (layer.bias.grad[:4] != 0).all() and (layer.bias.grad[4:] == 0).all()


def test_depthwise_conv_follows_the_input_channels():
    layer = ElasticConv2d(8, 8, ValueChoice("k", [3, 5]), depthwise=True)
    assert layer.groups == 8 and layer.weight.shape == (8, 1, 5, 5)
    layer.activate({"k": 3})
    x = torch.randn(2, 5, 6, 6)
    out = layer(x)
    assert out.shape == (2, 5, 6, 6)
    expected = F.conv2d(x, layer.weight[:5, :, 1:4, 1:4], padding=1, groups=5)
    assert torch.allclose(out, expected, atol=1e-6)
    frozen = layer.freeze(tuple(x.shape))
    assert type(frozen) is nn.Conv2d and frozen.groups == 5
    assert frozen.weight.shape == (5, 1, 3, 3)
    assert torch.allclose(frozen(x), out, atol=1e-6)


def test_depthwise_needs_equal_in_and_out():
    with pytest.raises(ValueError, match="4 != 8"):
        ElasticConv2d(8, 4, 3, depthwise=True)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("sample", [{"k": 3, "w": 4}, {"k": 5, "w": 8}])
def test_freeze_gives_a_plain_conv_with_equal_output(sample, stride):
    layer = conv(bias=True, stride=stride)
    layer.activate(sample)
    x = torch.randn(2, 5, 7, 7)
    frozen = layer.freeze(tuple(x.shape))
    assert type(frozen) is nn.Conv2d
    assert (frozen.in_channels, frozen.out_channels) == (5, sample["w"])
    assert frozen.kernel_size == (sample["k"],) * 2
    assert torch.allclose(frozen(x), layer(x), atol=1e-6)
    # a copy: training the frozen conv leaves the supernet alone
    assert frozen.weight.data_ptr() != layer.weight.data_ptr()
    before = layer.weight.detach().clone()
    with torch.no_grad():
        frozen.weight.add_(1.0)
    assert torch.equal(layer.weight, before)


def test_freeze_needs_the_input_shape():
    with pytest.raises(RuntimeError, match="not called"):
        conv().freeze(None)


def test_conv_choices_report_the_source_labels():
    expand = ValueChoice("e", [2, 4])
    layer = ElasticConv2d(4, 16, 1, out_channels_choice=expand.map(lambda e: 4 * e))
    assert [c.label for c in layer.choices()] == ["e"]
    layer.activate({"e": 2})
    assert layer(torch.randn(1, 4, 3, 3)).shape == (1, 8, 3, 3)
    assert [c.label for c in conv().choices()] == ["k", "w"]


@pytest.mark.parametrize("k", [2, ValueChoice("k", [3, 4])])
def test_even_kernel_is_rejected(k):
    with pytest.raises(ValueError, match="odd.*got [24]"):
        ElasticConv2d(4, 4, k)


def test_width_choice_larger_than_the_layer_is_rejected():
    with pytest.raises(ValueError, match="out_channels=8"):
        ElasticConv2d(4, 8, 1, out_channels_choice=ValueChoice("w", [4, 16]))


def test_decreasing_mapped_width_larger_than_the_layer_is_rejected():
    # the mapped candidates are (16, 8): the largest is the first, not the last
    width = ValueChoice("w", [1, 2]).map(lambda w: 16 // w)
    with pytest.raises(ValueError, match="out_channels=8"):
        ElasticConv2d(4, 8, 1, out_channels_choice=width)


def test_decreasing_mapped_kernel_builds_the_largest_kernel():
    kernel = ValueChoice("e", [1, 2]).map(lambda e: 7 - 2 * e)  # candidates (5, 3)
    layer = ElasticConv2d(4, 4, kernel)
    assert layer.weight.shape[-2:] == (5, 5)
    for e in (1, 2):
        layer.activate({"e": e})
        assert layer(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6)


def test_too_many_input_channels_names_both_numbers():
    with pytest.raises(ValueError, match="at most 6 .* received 9"):
        conv()(torch.randn(1, 9, 5, 5))
    with pytest.raises(ValueError, match="at most 6 .* received 7"):
        conv().freeze((1, 7, 5, 5))


# ElasticLinear --------------------------------------------------------------------------------

def test_linear_slices_inputs_and_outputs():
    fc = ElasticLinear(8, 6, out_features_choice=ValueChoice("o", [3, 6]))
    assert fc(torch.randn(2, 8)).shape == (2, 6)
    fc.activate({"o": 3})
    x = torch.randn(2, 5)
    out = fc(x)
    assert out.shape == (2, 3)
    assert torch.allclose(out, x @ fc.weight[:3, :5].T + fc.bias[:3], atol=1e-6)
    frozen = fc.freeze(tuple(x.shape))
    assert type(frozen) is nn.Linear and (frozen.in_features, frozen.out_features) == (5, 3)
    assert torch.allclose(frozen(x), out, atol=1e-6)
    assert [c.label for c in fc.choices()] == ["o"]


def test_linear_too_many_features_names_both_numbers():
    with pytest.raises(ValueError, match="at most 8 .* received 10"):
        ElasticLinear(8, 4)(torch.randn(1, 10))


def test_linear_width_choice_larger_than_the_layer_is_rejected():
    with pytest.raises(ValueError, match="out_features=4"):
        ElasticLinear(8, 4, out_features_choice=ValueChoice("o", [4, 8]))


# ElasticBatchNorm2d ---------------------------------------------------------------------------

def test_batchnorm_training_updates_only_the_slice_in_use():
    bn = ElasticBatchNorm2d(8)
    x = torch.randn(6, 5, 3, 3) * 2 + 1
    bn.train()
    out = bn(x)
    assert out.shape == x.shape
    mean = x.mean((0, 2, 3))
    var = x.var((0, 2, 3), unbiased=True)
    assert torch.allclose(bn.running_mean[:5], 0.1 * mean, atol=1e-5)
    assert torch.allclose(bn.running_var[:5], 0.9 + 0.1 * var, atol=1e-5)
    assert torch.equal(bn.running_mean[5:], torch.zeros(3))
    assert torch.equal(bn.running_var[5:], torch.ones(3))
    assert bn.num_batches_tracked.item() == 1
    # batch statistics normalise the output
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(5), atol=1e-5)


def test_batchnorm_matches_torch_at_full_width_and_in_eval():
    torch_bn, bn = nn.BatchNorm2d(4), ElasticBatchNorm2d(4)
    for _ in range(3):
        x = torch.randn(5, 4, 3, 3)
        assert torch.allclose(bn(x), torch_bn(x), atol=1e-5)
    assert torch.allclose(bn.running_mean, torch_bn.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, torch_bn.running_var, atol=1e-6)
    bn.eval()
    torch_bn.eval()
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(bn(x), torch_bn(x), atol=1e-5)
    # eval on a narrower input uses the first channels' statistics
    narrow = x[:, :3]
    expected = F.batch_norm(narrow, bn.running_mean[:3], bn.running_var[:3],
                            bn.weight[:3], bn.bias[:3], False, 0.0, bn.eps)
    assert torch.allclose(bn(narrow), expected, atol=1e-6)


def test_batchnorm_momentum_none_is_a_cumulative_average():
    bn, torch_bn = ElasticBatchNorm2d(4, momentum=None), nn.BatchNorm2d(4, momentum=None)
    batches = [torch.randn(8, 4, 2, 2) + i for i in range(4)]
    for x in batches:
        assert torch.allclose(bn(x), torch_bn(x), atol=1e-5)
    expected = torch.stack([x.mean((0, 2, 3)) for x in batches]).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert torch.allclose(bn.running_mean, torch_bn.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, torch_bn.running_var, atol=1e-5)
    assert bn.num_batches_tracked.item() == 4


def test_batchnorm_freeze_copies_the_slice_and_its_statistics():
    bn = ElasticBatchNorm2d(8)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    for _ in range(2):
        bn(torch.randn(4, 8, 3, 3) * 3)
    bn.eval()
    frozen = bn.freeze((1, 6, 3, 3))
    assert type(frozen) is nn.BatchNorm2d and frozen.num_features == 6
    assert torch.equal(frozen.running_mean, bn.running_mean[:6])
    assert torch.equal(frozen.running_var, bn.running_var[:6])
    assert torch.equal(frozen.weight, bn.weight[:6])
    assert torch.equal(frozen.num_batches_tracked, bn.num_batches_tracked)
    frozen.eval()
    x = torch.randn(2, 6, 3, 3)
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)
    assert frozen.running_mean.data_ptr() != bn.running_mean.data_ptr()


def test_batchnorm_too_many_channels_names_both_numbers():
    with pytest.raises(ValueError, match="at most 4 .* received 6"):
        ElasticBatchNorm2d(4)(torch.randn(2, 6, 2, 2))


# LayerChoice and ElasticDepth -----------------------------------------------------------------

def test_layer_choice_activates_and_freezes_the_candidate():
    ops = {"conv": nn.Conv2d(3, 3, 3, padding=1), "pool": nn.AvgPool2d(3, 1, 1),
           "skip": nn.Identity()}
    layer = LayerChoice("op", ops)
    assert layer.choices()[0].candidates == ("conv", "pool", "skip")
    assert layer.active == "skip"  # the last candidate by default
    x = torch.randn(1, 3, 4, 4)
    for name, module in ops.items():
        layer.activate({"op": name})
        assert torch.equal(layer(x), module(x))
        assert layer.freeze(tuple(x.shape)) is module


def test_layer_choice_from_a_list_and_empty():
    layer = LayerChoice("op", [nn.Identity(), nn.ReLU()])
    assert layer.choice.candidates == (0, 1)  # positions, as NNI names a list's candidates
    layer.activate({"op": 1})
    assert (layer(torch.tensor([-1.0, 2.0])) == torch.tensor([0.0, 2.0])).all()
    with pytest.raises(ValueError, match="'op' needs at least one candidate"):
        LayerChoice("op", {})


def test_elastic_depth_runs_the_first_blocks():
    blocks = [nn.Linear(2, 2) for _ in range(3)]
    stage = ElasticDepth("d", blocks, min_depth=2)
    assert stage.choice.candidates == (2, 3)
    assert stage.choices()[0].label == "d"
    x = torch.randn(4, 2)
    assert torch.equal(stage(x), blocks[2](blocks[1](blocks[0](x))))  # deepest by default
    stage.activate({"d": 2})
    assert torch.equal(stage(x), blocks[1](blocks[0](x)))
    frozen = stage.freeze((4, 2))
    assert type(frozen) is nn.Sequential and len(frozen) == 2
    assert frozen[0] is blocks[0] and frozen[1] is blocks[1]
    assert torch.equal(frozen(x), stage(x))


@pytest.mark.parametrize("min_depth", [0, 4])
def test_elastic_depth_bad_min_depth(min_depth):
    with pytest.raises(ValueError, match=rf"min_depth={min_depth} must lie in \[1, 3\]"):
        ElasticDepth("d", [nn.Identity() for _ in range(3)], min_depth=min_depth)
