"""The standard pipeline's ops (crop with padding, horizontal flip, Cutout) and `within_base`."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas_aug.augment import OpSpec, Policy, PolicyAugment, to_albumentations, to_kornia
from nas_aug.augment.apply import apply_params, sample_params
from nas_aug.augment.ops import OPS, crop_offsets, cutout_boxes

BASE = Policy.preset("none").within_base()  # crop 0.125, flip 0.5, cutout 0.5


def torchvision_crop(image, pad, top, left):
    """torchvision's RandomCrop(size, padding=pad) at offset (top, left) of the padded image."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (pad[1], pad[1], pad[0], pad[0]))
    return padded[..., top:top + height, left:left + width]


@pytest.mark.parametrize("shape", [(32, 32), (28, 28), (9, 13)])
def test_crop_is_torchvisions_padded_crop_at_every_offset(shape):
    height, width = shape
    image = torch.rand(1, 3, height, width)
    pad = (round(0.25 * height), round(0.25 * width))
    seen = set()
    for u in torch.linspace(0, 0.999, 41).tolist():
        position = torch.tensor([[u, 1 - u - 0.0005]])
        dy, dx = crop_offsets(torch.tensor([0.25]), position, height, width)[0].tolist()
        seen.add(dy)
        out = OPS["crop"].apply(image, torch.ones(1), torch.ones(1), position)
        assert torch.equal(out, torchvision_crop(image, pad, dy + pad[0], dx + pad[1]))
    assert seen == set(range(-pad[0], pad[0] + 1))  # every offset is reachable


def test_crop_offsets_are_uniform_over_the_padding():
    position = torch.rand(20000, 2, generator=torch.Generator().manual_seed(0))
    shift = crop_offsets(torch.full((20000,), 0.125), position, 32, 32)  # 4 pixels
    counts = torch.bincount(shift[:, 0] + 4, minlength=9).float()
    assert len(counts) == 9 and (counts / counts.mean() - 1).abs().max() < 0.1


def test_cutout_erases_one_box_of_the_right_size_inside_the_image():
    image = torch.rand(64, 1, 28, 28) * 0.9 + 0.1  # no zeros of its own
    position = torch.rand(64, 2, generator=torch.Generator().manual_seed(1))
    out = OPS["cutout"].apply(image, torch.full((64,), 0.5), torch.ones(64), position)
    side = round(0.25 * 28)  # magnitude 0.5: a quarter of the side
    erased = out == 0
    assert erased.flatten(1).sum(1).eq(side * side).all()
    boxes = cutout_boxes(torch.full((64,), 0.25), position, 28, 28)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + side <= 28).all()
    for i in (0, 17, 63):
        top, left, h, w = boxes[i].tolist()
        assert erased[i, 0, top:top + h, left:left + w].all()
    assert torch.equal(out[~erased], image[~erased])


def test_hflip_mirrors_left_to_right(rgb):
    assert torch.equal(OPS["hflip"].apply(rgb, torch.zeros(4), torch.ones(4)), rgb.flip(-1))


def test_positional_ops_need_a_position(rgb):
    with pytest.raises(ValueError, match=r"op 'crop' needs a position of shape \(4, 2\)"):
        OPS["crop"].apply(rgb, torch.ones(4), torch.ones(4))


def test_each_sample_draws_its_own_crop_flip_and_box(rgb):
    batch = rgb[:1].expand(32, -1, -1, -1).contiguous()
    augment = PolicyAugment(BASE, seed=0)
    out = augment(batch)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 32
    params = augment.last_params
    assert params.sub_policy.shape == (32, 3)  # before, the drawn sub-policy, after
    assert 0.2 < params.apply[:, 0, 1].float().mean() < 0.8  # the flip fires about half the time
    assert torch.equal(augment(batch, params), out)
    # a sample is the same whatever its batch: the parameters decide everything
    one = type(params)(params.sub_policy[5:6], params.apply[5:6], params.sign[5:6],
                       params.position[5:6])
    assert torch.equal(apply_params(batch[5:6], BASE, one), out[5:6])


def test_base_ops_fused_equal_op_by_op_exactly(rgb):
    """The pixel ops copy values, so the one-gather application is bit-identical."""
    policy = Policy([(OpSpec("crop", 1.0, 0.6), OpSpec("hflip", 0.5, 0.0)),
                     (OpSpec("cutout", 0.7, 0.8), OpSpec("crop", 0.5, 1.0))], draws_per_sample=3)
    batch = rgb.repeat(8, 1, 1, 1)
    params = sample_params(policy, 32, torch.Generator().manual_seed(2))
    expected = []
    for i, image in enumerate(batch.split(1)):
        for draw, sub in enumerate(params.sub_policy[i].tolist()):
            for slot, spec in enumerate(policy.sub_policies[sub]):
                if params.apply[i, draw, slot]:
                    position = params.position[i, draw, slot:slot + 1]
                    image = OPS[spec.name].apply(image, torch.tensor([spec.magnitude]),
                                                 torch.ones(1), position)
        expected.append(image)
    assert torch.equal(apply_params(batch, policy, params), torch.cat(expected))


def test_policies_without_crop_or_cutout_keep_their_random_stream():
    """Positions are drawn only where an op uses them, so older seeded runs replay unchanged."""
    policy = Policy.preset("trivialaugment")
    generator = torch.Generator().manual_seed(0)
    params = sample_params(policy, 16, generator)
    expected = torch.Generator().manual_seed(0)
    torch.randint(len(policy.sub_policies), (16, 1), generator=expected)
    torch.rand((16, 1, 1), generator=expected)
    torch.randint(0, 2, (16, 1, 1), generator=expected)
    assert torch.equal(generator.get_state(), expected.get_state())
    assert not params.position.any()


def test_within_base_runs_crop_and_flip_before_and_cutout_after():
    policy = Policy([(OpSpec("invert", 1.0, 0.0),)], name="inv").within_base(0.125, 1.0, 0.5)
    assert policy.name == "inv+base" and policy.op_names == ("crop", "hflip", "invert", "cutout")
    assert Policy.from_json(policy.to_json()) == policy
    image = torch.rand(4, 1, 16, 16) * 0.5 + 0.25  # no pixel 0 or 1: what is 0 was erased
    out = PolicyAugment(policy, seed=3)(image)
    # cutout came last: its box is 0, not inverted to 1; the crop's padding was inverted to 1
    assert out.eq(0).flatten(1).sum(1).eq(8 * 8).all()
    assert out.eq(1).any()


def test_crop_flip_preset_and_leaving_steps_out():
    assert Policy.preset("crop_flip").op_names == ("crop", "hflip", "identity")
    assert Policy.preset("crop_flip").after == ()
    assert Policy.preset("none").within_base(padding=0, flip=0, cutout=0).op_names == ("identity",)


@pytest.mark.parametrize("kwargs, message", [
    ({"padding": 0.3},
     r"crop padding must be a fraction of the image side in \[0, 0.25\], got 0.3"),
    ({"cutout": 0.75}, r"cutout size must be a fraction of the image side in \[0, 0.5\], got 0.75"),
    ({"padding": -1}, r"crop padding .* got -1"),
    ({"cutout": "16"}, r"cutout size .* got '16'"),
    ({"flip": 2}, r"flip probability must be in \[0, 1\], got 2"),
])
def test_within_base_names_the_accepted_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Policy.preset("trivialaugment").within_base(**kwargs)


def test_a_policy_with_a_base_is_not_put_inside_another():
    with pytest.raises(ValueError, match="policy 'crop_flip' already runs ops before or after"):
        Policy.preset("crop_flip").within_base()


def test_a_crop_that_rounds_to_no_pixel_is_refused():
    augment = PolicyAugment(Policy.preset("crop_flip"), seed=0)  # pads 1/8 of the side
    assert augment(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)  # digits: one pixel
    with pytest.raises(ValueError, match=r"op 'crop' at magnitude 0.5 .* 3 x 3 images and "
                                         r"rounds to none; it needs images of at least 4 pixels"):
        augment(torch.rand(2, 1, 3, 3))


def test_params_of_a_policy_without_base_are_refused_by_one_with_it(rgb):
    params = sample_params(Policy.preset("none"), 4)
    with pytest.raises(ValueError, match="params were sampled for another batch or policy"):
        apply_params(rgb, BASE, params)


def test_kornia_runs_before_and_after_around_the_drawn_sub_policy(rgb):
    flip_then_invert = Policy([(OpSpec("invert", 1.0, 0.0),)]).within_base(0, 1.0, 0)
    assert torch.allclose(to_kornia(flip_then_invert)(rgb), 1 - rgb.flip(-1))
    erased = to_kornia(Policy.preset("none").within_base(0, 0, 0.5))(rgb * 0.5 + 0.25)
    assert erased.eq(0).flatten(1).sum(1).eq(3 * 16 * 16).all()


def test_albumentations_runs_before_and_after_around_the_drawn_sub_policy():
    image = np.full((16, 16, 1), 100, np.uint8)
    image[:, :8] = 50
    transform, unsupported = to_albumentations(
        Policy([(OpSpec("invert", 1.0, 0.0),)]).within_base(0, 1.0, 0.5))
    out = transform(image=image)["image"]
    assert not unsupported
    assert (out == 0).sum() == 8 * 8  # cutout last: its box stays 0
    assert set(np.unique(out[:, :8])) <= {0, 155} and set(np.unique(out[:, 8:])) <= {0, 205}
