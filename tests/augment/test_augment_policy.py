"""Policies as data: OpSpec validation, presets, RandAugment, JSON round trip."""

import dataclasses
import json
import math
import re

import pytest
from torchvision.transforms import AutoAugment, AutoAugmentPolicy

from nas_aug.augment import OpSpec, Policy, RandAugment
from nas_aug.augment.ops import OPS, RANDAUGMENT_OPS

ALL_POLICIES = {**{name: (lambda name=name: Policy.preset(name)) for name in Policy.presets()},
                "randaugment": lambda: RandAugment(2, 0.3)}


@pytest.mark.parametrize("name", sorted(ALL_POLICIES))
def test_json_round_trip(name):
    policy = ALL_POLICIES[name]()
    text = json.dumps(policy.to_json())
    assert Policy.from_json(json.loads(text)) == policy
    assert Policy.from_json(text) == policy
    assert json.loads(text)["sub_policies"][0][0].keys() == {"name", "probability", "magnitude"}


def test_presets_are_named_and_listed():
    assert Policy.presets() == ("autoaugment_cifar10", "autoaugment_imagenet",
                                "autoaugment_svhn", "crop_flip", "none", "trivialaugment")
    for name in Policy.presets():
        assert Policy.preset(name).name == name


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet", "svhn"])
def test_autoaugment_tables_match_torchvision(dataset):
    published = AutoAugment()._get_policies(AutoAugmentPolicy(dataset))
    ours = Policy.preset(f"autoaugment_{dataset}")
    assert ours.draws_per_sample == 1 and len(ours.sub_policies) == len(published) == 25
    for sub, reference in zip(ours.sub_policies, published, strict=True):
        for spec, (tv_name, probability, magnitude_bin) in zip(sub, reference, strict=True):
            assert spec.name == _snake(tv_name)
            assert spec.probability == probability
            if magnitude_bin is None:
                assert spec.magnitude == 0.0
            else:
                assert OPS[spec.name].has_magnitude
                assert math.isclose(spec.magnitude * 9, magnitude_bin)


def test_trivialaugment_draws_op_and_magnitude_uniformly():
    policy = Policy.preset("trivialaugment")
    assert policy.draws_per_sample == 1
    assert all(len(sub) == 1 and sub[0].probability == 1.0 for sub in policy.sub_policies)
    ops = [sub[0].name for sub in policy.sub_policies]
    assert {ops.count(name) for name in RANDAUGMENT_OPS} == {31}
    rotate = sorted(sub[0].magnitude for sub in policy.sub_policies if sub[0].name == "rotate")
    assert rotate == [b / 30 for b in range(31)]


def test_randaugment():
    policy = RandAugment(num_ops=3, magnitude=0.5)
    assert policy.draws_per_sample == 3 and policy.op_names == RANDAUGMENT_OPS
    assert {sub[0].magnitude for sub in policy.sub_policies} == {0.5}
    assert {sub[0].probability for sub in policy.sub_policies} == {1.0}


def test_opspec_is_frozen_plain_data():
    spec = OpSpec("rotate", 1, 0)
    assert spec == OpSpec("rotate", 1.0, 0.0) and isinstance(spec.probability, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.magnitude = 0.5
    assert hash(Policy.preset("autoaugment_svhn")) == hash(Policy.preset("autoaugment_svhn"))


@pytest.mark.parametrize("bad, hint", [("rotat", "'rotate'"), ("Rotate", "'rotate'"),
                                       ("ShearX", "'shear_x'"), ("mixup", "")])
def test_unknown_op_lists_valid_ops_and_closest(bad, hint):
    with pytest.raises(ValueError) as error:
        OpSpec(bad, 0.5, 0.5)
    message = str(error.value)
    assert repr(bad) in message and hint in message and "'solarize'" in message


@pytest.mark.parametrize("field", ["probability", "magnitude"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, 30, float("nan"), float("inf"), True, "0.5", None])
def test_probability_and_magnitude_out_of_range(field, bad):
    values = {"probability": 0.5, "magnitude": 0.5, field: bad}
    with pytest.raises(ValueError, match=f"{field} of op 'rotate' must be") as error:
        OpSpec("rotate", **values)
    assert repr(float(bad) if isinstance(bad, (int, float)) and not isinstance(bad, bool)
                else bad) in str(error.value)


@pytest.mark.parametrize("bad, hint", [("autoaugment_cifar", "'autoaugment_cifar10'"),
                                       ("AutoAugment_ImageNet", "'autoaugment_imagenet'"),
                                       ("randaugment", "RandAugment(num_ops, magnitude)")])
def test_unknown_preset_lists_presets(bad, hint):
    with pytest.raises(ValueError, match="presets are") as error:
        Policy.preset(bad)
    message = str(error.value)
    assert repr(bad) in message and hint in message and "'trivialaugment'" in message


@pytest.mark.parametrize("kwargs, found", [({"num_ops": 0}, "0"), ({"num_ops": 1.5}, "1.5"),
                                           ({"magnitude": 9}, "9.0"),
                                           ({"magnitude": -0.5}, "-0.5")])
def test_randaugment_bad_arguments(kwargs, found):
    with pytest.raises(ValueError, match="RandAugment") as error:
        RandAugment(**kwargs)
    assert found in str(error.value)


def test_bad_policies():
    spec = OpSpec("invert", 0.5, 0.0)
    with pytest.raises(ValueError, match="at least one sub-policy"):
        Policy([])
    with pytest.raises(ValueError, match=r"sub-policy 0 is empty"):
        Policy([()])
    with pytest.raises(ValueError, match=r"holds \('invert', 0.5, 0\).*OpSpec\(name, probabi"):
        Policy([(("invert", 0.5, 0),)])
    with pytest.raises(ValueError, match="sub-policy 0 must be a tuple of OpSpec"):
        Policy([spec])
    with pytest.raises(ValueError, match="draws_per_sample must be an integer >= 1, got 0"):
        Policy([(spec,)], draws_per_sample=0)


def test_from_json_bad_keys():
    good = {"name": "p", "sub_policies": [[{"name": "invert", "probability": 1.0,
                                            "magnitude": 0.0}]]}
    assert Policy.from_json(good).name == "p"
    with pytest.raises(ValueError, match="unknown key 'sub_policy'.*did you mean 'sub_policies'"):
        Policy.from_json({"sub_policy": []})
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['magnitude'\]"):
        Policy.from_json({"sub_policies": [[{"name": "invert", "probability": 1.0}]]})
    with pytest.raises(ValueError, match="unknown key 'prob'"):
        Policy.from_json({"sub_policies": [[{"name": "invert", "prob": 1.0, "magnitude": 0}]]})
    with pytest.raises(ValueError, match="unknown augmentation op 'Invert'"):
        Policy.from_json({"sub_policies": [[{"name": "Invert", "probability": 1.0,
                                             "magnitude": 0.0}]]})
