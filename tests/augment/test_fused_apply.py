"""The grouped, fused application equals applying each sample's ops one at a time."""

import pytest
import torch

from nas_aug.augment import OpSpec, Policy, RandAugment
from nas_aug.augment.apply import AugmentParams, apply_params, sample_params
from nas_aug.augment.ops import OP_NAMES, OPS

POLICIES = {name: Policy.preset(name) for name in Policy.presets()}
POLICIES["randaugment"] = RandAugment(2, 0.5)
POLICIES["trivialaugment+base"] = Policy.preset("trivialaugment").within_base()
# every op in one sub-policy, each firing half the time, twice per sample
POLICIES["every_op"] = Policy([tuple(OpSpec(name, 0.5, 0.7) for name in OP_NAMES)],
                              draws_per_sample=2)


def reference(images: torch.Tensor, policy: Policy, params: AugmentParams) -> torch.Tensor:
    """Each sample on its own, its ops applied one at a time with the ops' own kernels."""
    rows = policy.sub_policies + tuple(ops for ops in (policy.before, policy.after) if ops)
    out = []
    for i, image in enumerate(images.clamp(0, 1).split(1)):
        for draw, sub in enumerate(params.sub_policy[i].tolist()):
            for slot, spec in enumerate(rows[sub]):
                if params.apply[i, draw, slot]:
                    image = OPS[spec.name].apply(image, torch.tensor([spec.magnitude]),
                                                 params.sign[i, draw, slot:slot + 1],
                                                 params.position[i, draw, slot:slot + 1])
        out.append(image)
    return torch.cat(out)


def random_images(kind: str, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    shape = {"rgb": (48, 3, 32, 32), "grey": (48, 1, 28, 28), "odd": (24, 3, 9, 13)}[kind]
    images = torch.rand(shape, generator=generator, dtype=torch.float64)
    if kind == "grey":
        images = (images * 255).round() / 255  # 8-bit levels, as decoded images have
    return images.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["rgb", "grey", "odd"])
@pytest.mark.parametrize("name", POLICIES)
def test_fused_application_equals_the_per_sample_loop(name, kind, dtype):
    policy, images = POLICIES[name], random_images(kind, dtype)
    for seed in range(2):
        params = sample_params(policy, images.shape[0], torch.Generator().manual_seed(seed))
        out = apply_params(images, policy, params)
        assert out.dtype == dtype
        torch.testing.assert_close(out, reference(images, policy, params), atol=1e-5, rtol=0)

