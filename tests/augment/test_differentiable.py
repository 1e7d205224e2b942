"""DADA's relaxed policy: hard choices in value, gradients to every kind of parameter."""

import pytest
import torch

from nas_aug.augment import OpSpec, Policy
from nas_aug.augment.differentiable import DifferentiablePolicy
from nas_aug.augment.ops import AUTOAUGMENT_OPS, BASE_OPS, get_op

OPS = ("rotate", "invert", "solarize", "brightness")
WITH_MAGNITUDE = [n for n in AUTOAUGMENT_OPS + BASE_OPS if get_op(n).has_magnitude]


def _random_projection(out):
    """A scalar that depends on every output pixel with a fixed random weight."""
    return (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(0))).sum()


def _reference(policy, images, noise):
    """Each sample on its own: per slot the arg-max op, applied where its logit wins, with the
    op's own magnitude (the same in every slot)."""
    chosen = (policy.logits.detach() + noise.gumbel).argmax(2)
    out = []
    for b in range(images.shape[0]):
        image = images[b:b + 1]
        for slot, index in enumerate(chosen[b].tolist()):
            if policy.probability_logits[index] + noise.logistic[b, slot] > 0:
                image = get_op(policy.ops[index]).apply(
                    image, policy.magnitudes[index].detach().reshape(1),
                    noise.sign[b:b + 1, slot], noise.position[b:b + 1, slot])
        out.append(image)
    return torch.cat(out)


@pytest.mark.parametrize("ops", [OPS, ("crop", "hflip", "cutout", "rotate")])
def test_forward_value_is_the_hard_sample_applied_per_sample(ops, images):
    policy = DifferentiablePolicy(ops, seed=0)
    with torch.no_grad():
        policy.logits.normal_()
        policy.probability_logits.normal_()
        policy.magnitudes.uniform_()
    noise = policy.sample_noise(images.shape[0])
    torch.testing.assert_close(policy(images, noise), _reference(policy, images, noise),
                               atol=1e-5, rtol=0)


def test_samples_of_one_batch_draw_different_sub_policies():
    policy = DifferentiablePolicy(seed=0)
    noise = policy.sample_noise(32)
    chosen = (policy.logits.detach() + noise.gumbel).argmax(2)
    assert len({tuple(pair) for pair in chosen.tolist()}) > 16


def test_gradients_reach_every_kind_of_parameter(rgb):
    policy = DifferentiablePolicy(OPS, seed=1)
    out = policy(rgb.repeat(4, 1, 1, 1), policy.sample_noise(16))
    _random_projection(out).backward()
    for name, parameter in policy.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", WITH_MAGNITUDE)
def test_each_magnitude_gets_a_gradient(name, rgb):
    policy = DifferentiablePolicy((name,), ops_per_sub_policy=1, initial_probability=0.99,
                                  seed=0)
    out = policy(rgb, policy.sample_noise(rgb.shape[0]))
    _random_projection(out).backward()
    assert policy.magnitudes.grad.abs().sum() > 0


def test_noise_replays_and_the_generator_state_travels(gray):
    policy = DifferentiablePolicy(OPS, seed=0)
    noise = policy.sample_noise(4)
    assert torch.equal(policy(gray, noise), policy(gray, noise))
    copy = DifferentiablePolicy(OPS, seed=123)
    copy.load_state_dict(policy.state_dict())
    assert torch.equal(copy.sample_noise(4).gumbel, policy.sample_noise(4).gumbel)


def test_to_policy_keeps_the_heaviest_sub_policies_with_learned_values():
    policy = DifferentiablePolicy(("rotate", "invert", "solarize"), seed=0)
    with torch.no_grad():
        policy.logits.copy_(torch.tensor([1.0, 2.0, -1.0]))  # invert, then rotate
        policy.probability_logits.copy_(torch.tensor([0.0, 2.0, 0.0]))
        policy.magnitudes.copy_(torch.tensor([0.25, 0.7, 0.5]))
    exported = policy.to_policy(top_k=3)
    rotate, invert = OpSpec("rotate", 0.5, 0.25), OpSpec("invert", 0.8808, 0.0)
    assert exported.sub_policies == ((invert, invert), (rotate, invert), (invert, rotate))
    assert Policy.from_json(exported.to_json()) == exported
    weights = torch.softmax(torch.tensor([1.0, 2.0, -1.0]), 0).tolist()
    assert [entry["weight"] for entry in policy.summary(3)] == pytest.approx(
        [weights[1] ** 2, weights[0] * weights[1], weights[0] * weights[1]], abs=1e-6)
    assert policy.op_table()["probability"] == pytest.approx([0.5, 0.880797, 0.5], abs=1e-6)


def test_to_policy_by_default_is_the_distribution_the_fit_trains_with(gray):
    policy = DifferentiablePolicy(("rotate", "invert", "solarize", "contrast"), seed=0)
    with torch.no_grad():
        policy.logits.copy_(torch.log(torch.tensor([0.5, 0.3, 0.196, 0.004])))
        policy.probability_logits.copy_(torch.tensor([0.0, 2.0, 0.0, 0.0]))
        policy.magnitudes.copy_(torch.tensor([0.25, 0.7, 0.5, 0.9]))
    exported = policy.to_policy(resolution=50)
    assert exported.draws_per_sample == policy.ops_per_sub_policy == 2
    assert all(len(ops) == 1 for ops in exported.sub_policies)
    names = [ops[0].name for ops in exported.sub_policies]
    # 25, 15, 9.8 and 0.2 of 50: the largest remainders round 9.8 up and 0.2 away; 5:3:2
    assert [names.count(name) for name in policy.ops] == [5, 3, 2, 0]
    assert exported.sub_policies[5][0] == OpSpec("invert", 0.8808, 0.0)
    assert exported.sub_policies[0][0] == OpSpec("rotate", 0.5, 0.25)
    # each slot of a sample draws the ops at the exported shares, as the fit's slots draw them
    draws = torch.stack([policy.sample_noise(1).gumbel[0] for _ in range(4000)])  # (n, L, ops)
    fit_shares = torch.bincount((policy.logits.detach() + draws).argmax(-1).flatten(),
                                minlength=4) / draws[..., 0].numel()
    assert fit_shares.tolist() == pytest.approx([0.5, 0.3, 0.196, 0.004], abs=0.02)


def test_decay_toward_prior_moves_each_parameter_back_by_the_fraction():
    policy = DifferentiablePolicy(("rotate", "invert"), initial_probability=0.2,
                                  initial_magnitude=0.4)
    prior = [p.detach().clone() for p in policy.parameters()]
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.tensor([1.0, -0.5]))
    policy.decay_toward_prior_(0.25)
    for p, start in zip(policy.parameters(), prior):
        torch.testing.assert_close(p.detach(), start + 0.75 * torch.tensor([1.0, -0.5]))


def test_an_op_shares_its_parameters_across_slots(gray):
    policy = DifferentiablePolicy(("rotate", "brightness"), seed=0)
    noise = policy.sample_noise(gray.shape[0])
    noise.gumbel[:, :, 0] = 100.0  # every slot of every sample draws rotate
    noise.logistic.fill_(100.0)  # and applies it
    _random_projection(policy(gray, noise)).backward()
    assert policy.magnitudes.grad[0] != 0 and policy.magnitudes.grad[1] == 0
    with torch.no_grad():
        policy.magnitudes[0] = 0.8
    rotate = get_op("rotate").apply
    expected = gray
    for slot in range(2):
        expected = rotate(expected, torch.full((gray.shape[0],), 0.8), noise.sign[:, slot],
                         noise.position[:, slot])
    torch.testing.assert_close(policy(gray, noise), expected, atol=1e-5, rtol=0)


def test_project_keeps_magnitudes_in_range():
    policy = DifferentiablePolicy(("rotate",), ops_per_sub_policy=1)
    with torch.no_grad():
        policy.magnitudes.fill_(1.7)
    policy.project_()
    assert policy.magnitudes.max().item() == 1.0


def test_entropy_is_log_k_when_uniform():
    policy = DifferentiablePolicy(OPS)
    assert policy.entropy() == pytest.approx(torch.log(torch.tensor(16.0)).item())


@pytest.mark.parametrize("kwargs, message", [
    (dict(ops=("rotat",)), "did you mean 'rotate'"),
    (dict(ops="rotate"), "tuple of op names"),
    (dict(initial_probability=1.0), "initial_probability"),
    (dict(initial_magnitude=1.5), "initial_magnitude"),
    (dict(temperature=0), "temperature"),
    (dict(ops_per_sub_policy=0), "ops_per_sub_policy"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DifferentiablePolicy(**kwargs)


def test_noise_for_another_batch_is_rejected(gray):
    policy = DifferentiablePolicy(OPS)
    with pytest.raises(ValueError, match="drawn for 3 samples"):
        policy(gray, policy.sample_noise(3))
