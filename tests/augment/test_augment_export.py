"""Export: policy.json, to_kornia and to_albumentations agree with our ops on real images."""

import json
import pickle

import albumentations as A
import numpy as np
import pytest
import torch

from nas_aug.augment import OpSpec, Policy, RandAugment, to_albumentations, to_kornia
from nas_aug.augment.albumentations_export import (
    ALBUMENTATIONS_OPS,
    UNSUPPORTED,
    albumentations_transform,
)
from nas_aug.augment.export import POLICY_FILE, load_policy, save_policy
from nas_aug.augment.kornia_export import KORNIA_OPS, KorniaPolicy, kornia_operation
from nas_aug.augment.ops import OP_NAMES, OPS, TRANSLATE_FRACTION

# one magnitude per op for the parity tests; translate shifts by whole pixels (a quarter of the
# side: 8 px on the 32 px photos, 6 px on the 24 px digits), as Albumentations can only do that
MAGNITUDE = {name: 0.7 for name in OP_NAMES}
MAGNITUDE["translate_x"] = MAGNITUDE["translate_y"] = 0.25 / TRANSLATE_FRACTION
EXPORTED = [name for name in OP_NAMES if ALBUMENTATIONS_OPS[name].build is not None]
# where crop and cutout land in the parity tests (the other ops ignore it)
POSITION = (0.3, 0.6)


def quantised(images):
    """Float images on the 8-bit grid, so both libraries start from the same pixels."""
    return (images * 255).round() / 255


def to_uint8(images):
    return [np.ascontiguousarray(a) for a in
            (images * 255).round().byte().permute(0, 2, 3, 1).numpy()]


def from_uint8(arrays, like):
    out = np.stack([a.reshape(like.shape[2], like.shape[3], like.shape[1]) for a in arrays])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(like.dtype) / 255


def ours(name, images, sign):
    batch = images.shape[0]
    return OPS[name].apply(images, torch.full((batch,), MAGNITUDE[name]),
                           torch.full((batch,), float(sign)),
                           torch.tensor([POSITION]).expand(batch, 2))


def albumentations_apply(transform, images):
    return from_uint8([transform(image=a)["image"] for a in to_uint8(images)], images)


def levels(a, b):
    """Mean absolute difference in 8-bit levels."""
    return (a - b).abs().mean().item() * 255


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("name", EXPORTED)
def test_albumentations_agrees_with_our_op(name, sign, images):
    images = quantised(images)
    transform = albumentations_transform(OpSpec(name, 1.0, MAGNITUDE[name]), sign=sign,
                                         position=POSITION)
    difference = levels(albumentations_apply(transform, images), ours(name, images, sign))
    assert difference <= ALBUMENTATIONS_OPS[name].tolerance + 1e-3, \
        f"{name} sign {sign:+.0f}: {difference:.3f} levels ({ALBUMENTATIONS_OPS[name].note})"


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("name", [name for name in OP_NAMES if name != "identity"])
def test_kornia_agrees_with_our_op(name, sign, images):
    operation = kornia_operation(OpSpec(name, 1.0, MAGNITUDE[name]), sign=sign,
                                 position=POSITION)
    assert torch.allclose(operation(images), ours(name, images, sign), atol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_albumentations_translates_by_whole_pixels_toward_zero(rgb, sign):
    images = quantised(rgb)  # 32 px wide: magnitude 1 shifts ours by 14.5 px
    transform = albumentations_transform(OpSpec("translate_x", 1.0, 1.0), sign=sign)
    whole = OPS["translate_x"].apply(images, torch.full((4,), 14 / 32 / TRANSLATE_FRACTION),
                                     torch.full((4,), sign))
    assert levels(albumentations_apply(transform, images), whole) < 1e-3


def test_every_op_is_in_both_tables():
    assert set(ALBUMENTATIONS_OPS) == set(KORNIA_OPS) == set(OP_NAMES)
    for name, entry in ALBUMENTATIONS_OPS.items():
        assert entry.note and (entry.build is None) == (entry.tolerance is None) \
            == (name in UNSUPPORTED)


def test_unsupported_ops_are_reported_not_dropped_silently():
    policy = Policy([(OpSpec("equalize", 1.0, 0.0), OpSpec("invert", 1.0, 0.0)),
                     (OpSpec("equalize", 0.5, 0.0),)], name="eq")
    transform, unsupported = to_albumentations(policy)
    assert unsupported == ["equalize"]
    image = np.full((8, 8, 3), 10, np.uint8)
    assert transform(image=image)["image"].max() in (10, 245)  # inverted or left alone
    with pytest.raises(ValueError, match=r"policy 'eq' uses ops .* \['equalize'\].*equalize: "
                                         r"A.Equalize follows neither"):
        to_albumentations(policy, strict=True)
    assert to_albumentations(RandAugment(2, 0.5))[1] == ["equalize"]
    assert to_albumentations(Policy([(OpSpec("rotate", 1.0, 0.5),)]), strict=True)[1] == []


def test_albumentations_picks_a_sub_policy_and_a_sign_per_image(rgb):
    rotate = Policy([(OpSpec("rotate", 1.0, 1.0),)])
    transform, _ = to_albumentations(rotate)
    transform.set_random_seed(0)
    images = quantised(rgb[:1]).expand(24, -1, -1, -1)
    out = albumentations_apply(transform, images)
    signs = [albumentations_apply(albumentations_transform(OpSpec("rotate", 1.0, 1.0), s),
                                  images[:1]) for s in (1.0, -1.0)]
    matches = torch.stack([(out - s).abs().flatten(1).amax(1) < 1e-6 for s in signs])
    assert matches.any(0).all() and matches.all(1).logical_not().all()  # each image: one sign

    invert_or_not = Policy([(OpSpec("invert", 1.0, 0.0),), (OpSpec("identity", 1.0, 0.0),)])
    transform, _ = to_albumentations(invert_or_not)
    transform.set_random_seed(0)
    out = albumentations_apply(transform, images)
    inverted = (out - (1 - images)).abs().flatten(1).amax(1) < 1e-6
    assert 0 < inverted.sum() < len(images)


def test_albumentations_probability_and_draws():
    never = Policy([(OpSpec("invert", 0.0, 0.0), OpSpec("solarize", 1.0, 0.0))])
    image = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    assert np.array_equal(to_albumentations(never)[0](image=image)["image"].reshape(8, 8, 1),
                          image)  # p=0 never fires; solarize at magnitude 0 inverts nothing
    twice = Policy([(OpSpec("invert", 1.0, 0.0),)], draws_per_sample=2)
    transform, _ = to_albumentations(twice)
    assert len(transform.transforms) == 2
    assert np.array_equal(transform(image=image)["image"].reshape(8, 8, 1), image)


def test_pipelines_serialise_and_pickle():
    transform, _ = to_albumentations(Policy.preset("autoaugment_svhn"))  # shear: our subclass
    image = np.zeros((16, 16, 3), np.uint8)
    for restored in (A.from_dict(A.to_dict(transform)), pickle.loads(pickle.dumps(transform))):
        assert restored(image=image)["image"].shape == image.shape
    augment = pickle.loads(pickle.dumps(to_kornia(Policy.preset("autoaugment_svhn"))))
    assert augment(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


def test_kornia_picks_sub_policies_per_batch(rgb):
    torch.manual_seed(0)
    policy = Policy([(OpSpec("invert", 1.0, 0.0),), (OpSpec("identity", 1.0, 0.0),)])
    augment = to_kornia(policy)
    images = rgb.repeat(4, 1, 1, 1)
    outcomes = set()
    for _ in range(8):
        inverted = torch.isclose(augment(images), 1 - images).flatten(1).all(1)
        assert inverted.all() or not inverted.any()  # the whole batch, as kornia does
        outcomes.add(bool(inverted.all()))
    assert outcomes == {True, False}


def test_kornia_draws_signs_and_probabilities_per_sample(rgb):
    torch.manual_seed(0)
    images = rgb[:1].expand(32, -1, -1, -1)
    out = to_kornia(Policy([(OpSpec("rotate", 1.0, MAGNITUDE["rotate"]),)]))(images)
    signs = [ours("rotate", images[:1], s) for s in (1.0, -1.0)]
    matches = torch.stack([torch.isclose(out, s, atol=1e-5).flatten(1).all(1) for s in signs])
    assert matches.any(0).all() and matches.all(1).logical_not().all()
    fired = to_kornia(Policy([(OpSpec("invert", 0.5, 0.0),)]))(images)
    inverted = torch.isclose(fired, 1 - images).flatten(1).all(1)
    assert 0 < inverted.sum() < len(images)


def test_kornia_module_replays_and_has_no_trainable_parameters(rgb):
    augment = to_kornia(RandAugment(num_ops=3, magnitude=0.5))
    assert isinstance(augment, KorniaPolicy) and augment.draws_per_sample == 3
    assert not any(p.requires_grad for p in augment.parameters())
    out = augment(rgb)
    assert len(augment._params) == 3
    assert torch.allclose(augment(rgb, params=augment._params), out)
    assert to_kornia(Policy.preset("trivialaugment"))(rgb).shape == rgb.shape


def test_kornia_rejects_a_non_policy():
    with pytest.raises(ValueError, match="expected a Policy"):
        to_kornia([("rotate", 0.5, 1.0)])


@pytest.mark.parametrize("preset", Policy.presets())
def test_policy_json_round_trip(preset, tmp_path):
    policy = Policy.preset(preset)
    path = save_policy(policy, tmp_path)
    assert path == tmp_path / POLICY_FILE
    assert load_policy(tmp_path) == policy and load_policy(path) == policy
    assert json.loads(path.read_text())["format"] == "nas_aug.policy/1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [POLICY_FILE]  # no temporary left


def test_policy_json_round_trip_randaugment_to_a_named_file(tmp_path):
    policy = RandAugment(3, 0.4)
    assert load_policy(save_policy(policy, tmp_path / "mine.json")) == policy


def test_load_policy_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no policy at"):
        load_policy(tmp_path)
    (tmp_path / POLICY_FILE).write_text(json.dumps(RandAugment().to_json()))
    with pytest.raises(ValueError, match=r"not a nas_aug.policy/1 file \(format None\)"):
        load_policy(tmp_path)
    (tmp_path / POLICY_FILE).write_text(json.dumps(
        {"format": "nas_aug.policy/1", "sub_policies": [[{"name": "rotat", "probability": 1,
                                                          "magnitude": 0}]]}))
    with pytest.raises(ValueError, match="policy.json: unknown augmentation op 'rotat'"):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match="expected a Policy"):
        save_policy({"sub_policies": []}, tmp_path)
