"""Per-sample application: sampling, replay, probabilities, grouping, image validation."""

import numpy as np
import pytest
import torch

from nas_aug.augment import OpSpec, Policy, PolicyAugment, RandAugment
from nas_aug.augment.apply import apply_params, sample_params
from nas_aug.augment.ops import OP_NAMES, OPS, RANDAUGMENT_OPS


def policy_of(*specs, draws=1):
    return Policy([tuple(specs)], name="test", draws_per_sample=draws)


def test_different_samples_of_one_batch_receive_different_ops(rgb):
    batch = rgb[:1].expand(64, -1, -1, -1).contiguous()
    policy = RandAugment(num_ops=1, magnitude=0.6)
    params = sample_params(policy, 64, torch.Generator().manual_seed(0))
    ops = [RANDAUGMENT_OPS[i] for i in params.sub_policy[:, 0].tolist()]
    assert len(set(ops)) >= 10                   # Kornia's RandAugment would pick one per batch
    out = apply_params(batch, policy, params)
    distinct = {tuple(np.round(o.flatten().numpy(), 4)) for o in out}
    assert len(distinct) >= 10
    # and each sample got exactly its own op
    for i, name in enumerate(ops):
        alone = OPS[name].apply(batch[i:i + 1], torch.tensor([0.6]), params.sign[i, 0],
                                params.position[i, 0])
        torch.testing.assert_close(out[i:i + 1], alone, atol=1e-6, rtol=0, msg=name)


def test_grouped_application_equals_sample_by_sample(images):
    policy = Policy.preset("autoaugment_imagenet").within_base()
    params = sample_params(policy, images.shape[0], torch.Generator().manual_seed(3))
    out = apply_params(images, policy, params)
    for i in range(images.shape[0]):
        one = type(params)(params.sub_policy[i:i + 1], params.apply[i:i + 1],
                           params.sign[i:i + 1], params.position[i:i + 1])
        torch.testing.assert_close(out[i:i + 1], apply_params(images[i:i + 1], policy, one),
                                   atol=1e-6, rtol=0)


def test_ops_run_in_order_within_a_sub_policy(rgb):
    posterize, invert = OpSpec("posterize", 1.0, 1.0), OpSpec("invert", 1.0, 0.0)
    first = PolicyAugment(policy_of(posterize, invert), seed=0)(rgb)
    expected = OPS["invert"].apply(OPS["posterize"].apply(rgb, torch.ones(4), torch.ones(4)),
                                   torch.zeros(4), torch.ones(4))
    torch.testing.assert_close(first, expected)


def test_replay_gives_identical_output(images):
    policy = Policy.preset("autoaugment_cifar10")
    params = sample_params(policy, images.shape[0], torch.Generator().manual_seed(1))
    assert torch.equal(apply_params(images, policy, params), apply_params(images, policy, params))
    augment = PolicyAugment(RandAugment(2, 0.5), seed=7)
    out = augment(images)
    assert torch.equal(augment(images, augment.last_params), out)
    assert torch.equal(PolicyAugment(RandAugment(2, 0.5), seed=7)(images), out)


def test_seed_and_state_dict(rgb):
    batch = rgb.repeat(4, 1, 1, 1)
    a, b = PolicyAugment(RandAugment(2, 0.5), seed=1), PolicyAugment(RandAugment(2, 0.5), seed=2)
    assert not torch.equal(a(batch), b(batch))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(batch), b(batch))


@pytest.mark.parametrize("name", OP_NAMES)
def test_probability_zero_never_applies_and_one_always(name, rgb):
    never = PolicyAugment(policy_of(OpSpec(name, 0.0, 1.0)), seed=0)
    assert all(torch.equal(never(rgb), rgb) for _ in range(3))
    always = PolicyAugment(policy_of(OpSpec(name, 1.0, 1.0)), seed=0)
    out = always(rgb)
    assert always.last_params.apply.all()
    expected = OPS[name].apply(rgb, torch.ones(4), always.last_params.sign[:, 0, 0],
                               always.last_params.position[:, 0, 0])
    torch.testing.assert_close(out, expected)


def test_probability_is_respected_per_sample(gray):
    batch = gray[:1].expand(400, -1, -1, -1)
    augment = PolicyAugment(policy_of(OpSpec("invert", 0.3, 0.0)), seed=0)
    inverted = (augment(batch) - batch).abs().flatten(1).amax(1) > 0
    assert torch.equal(inverted, augment.last_params.apply[:, 0, 0])
    assert 0.22 < inverted.float().mean() < 0.38


@pytest.mark.parametrize("name", Policy.presets())
def test_presets_run_on_gray_and_rgb(name, images):
    out = PolicyAugment(Policy.preset(name), seed=0)(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1


def test_empty_batch_and_small_tolerance(rgb):
    augment = PolicyAugment(RandAugment(2, 0.5), seed=0)
    assert augment(rgb[:0]).shape == rgb[:0].shape
    out = augment((rgb * 1.0005).clamp(max=1.0005))
    assert out.max() <= 1


@pytest.mark.parametrize("bad, found", [
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "got dtype torch.uint8"),
    (torch.full((2, 3, 8, 8), 255.0), "found values in [255, 255]"),
    (torch.full((2, 3, 8, 8), -1.5), "found values in [-1.5, -1.5]"),
    (torch.full((2, 3, 8, 8), float("nan")), "found values in [nan, nan]"),
    (torch.rand(3, 8, 8), "got shape (3, 8, 8) (3-D)"),
    (np.zeros((2, 3, 8, 8), dtype=np.float32), "got ndarray"),
    (torch.rand(2, 4, 8, 8), "'color' works on images with 1 or 3 channels, got 4 channels"),
])
def test_bad_images_say_what_was_found(bad, found):
    with pytest.raises(ValueError) as error:
        PolicyAugment(RandAugment(2, 0.5), seed=0)(bad)
    assert found in str(error.value)


def test_four_channels_work_without_color():
    policy = Policy([(OpSpec("rotate", 1.0, 0.5), OpSpec("equalize", 1.0, 0.0))])
    assert PolicyAugment(policy, seed=0)(torch.rand(2, 4, 8, 8)).shape == (2, 4, 8, 8)


def test_params_from_another_batch_or_policy_are_refused(rgb):
    policy = Policy.preset("autoaugment_svhn")
    params = sample_params(policy, 3, torch.Generator())
    with pytest.raises(ValueError, match=r"apply has shape \(3, 1, 2\), expected \(4, 1, 2\)"):
        apply_params(rgb, policy, params)
    with pytest.raises(ValueError, match="expected a Policy"):
        apply_params(rgb, "autoaugment_svhn", params)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 0, got -1"):
        sample_params(policy, -1)
    with pytest.raises(ValueError, match="seed must be an integer or None, got '0'"):
        PolicyAugment(policy, seed="0")
