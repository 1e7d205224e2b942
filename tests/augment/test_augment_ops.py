"""The op table: every op runs on 1- and 3-channel batches, magnitudes map as torchvision's do."""

import pytest
import torch
from kornia import enhance
from kornia.geometry import transform
from torchvision.transforms import RandAugment as TorchvisionRandAugment

from nas_aug.augment.ops import OP_NAMES, OPS, RANDAUGMENT_OPS, get_op

WITH_MAGNITUDE = [name for name in OP_NAMES if OPS[name].has_magnitude]
WITHOUT_MAGNITUDE = [name for name in OP_NAMES if not OPS[name].has_magnitude]


# where crop and cutout land (other ops ignore it): crop off centre, so that it moves the image,
# and cutout in the middle, where the digits have ink
POSITION = {"cutout": (0.5, 0.5)}


def run(name, images, magnitude, sign=1.0):
    batch = images.shape[0]
    position = torch.tensor([POSITION.get(name, (0.1, 0.8))]).expand(batch, 2)
    return OPS[name].apply(images, torch.full((batch,), float(magnitude)),
                           torch.full((batch,), float(sign)), position)


def mean_change(name, images, magnitude, sign):
    return (run(name, images, magnitude, sign) - images).abs().mean().item()


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_keeps_shape_dtype_and_range(name, images):
    generator = torch.Generator().manual_seed(0)
    batch = images.shape[0]
    magnitude = torch.rand(batch, generator=generator)
    sign = torch.randint(0, 2, (batch,), generator=generator) * 2.0 - 1.0
    out = OPS[name].apply(images, magnitude, sign, torch.rand(batch, 2, generator=generator))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_keeps_float64(name, rgb):
    assert run(name, rgb.double(), 0.7).dtype == torch.float64


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("name", WITH_MAGNITUDE + ["identity"])
def test_magnitude_zero_is_identity(name, sign, images):
    torch.testing.assert_close(run(name, images, 0.0, sign), images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", WITHOUT_MAGNITUDE)
def test_ops_without_magnitude_ignore_it(name, rgb):
    assert torch.equal(run(name, rgb, 0.0), run(name, rgb, 1.0, -1.0))


@pytest.mark.parametrize("name", ["auto_contrast", "equalize", "invert"])
def test_ops_without_magnitude_change_images(name, images):
    low_contrast = 0.2 + 0.6 * images
    assert mean_change(name, low_contrast, 0.0, 1.0) > 0.01


# every (op, sign, channels) where the op acts: unsigned ops ignore the sign, and color is the
# identity on 1-channel images (tested below)
ACTING = [(name, sign, kind) for name in WITH_MAGNITUDE for sign in (1.0, -1.0)
          for kind in ("gray", "rgb")
          if (OPS[name].signed or sign > 0) and not (name == "color" and kind == "gray")]


@pytest.mark.parametrize("name, sign, kind", ACTING)
def test_larger_magnitude_changes_more(name, sign, kind, request):
    images = request.getfixturevalue(kind)
    changes = [mean_change(name, images, m, sign) for m in (0.0, 0.25, 0.5, 1.0)]
    assert changes[0] < 1e-5
    assert changes == sorted(changes) and len(set(changes)) == 4, changes


def test_signed_ops_depend_on_the_sign(rgb):
    for name in OP_NAMES:
        if OPS[name].signed:
            assert not torch.allclose(run(name, rgb, 0.6, 1.0), run(name, rgb, 0.6, -1.0)), name


def test_color_is_identity_on_gray_and_refuses_other_channel_counts(gray, rgb):
    assert torch.equal(run("color", gray, 1.0), gray)
    four = torch.cat([rgb, rgb[:, :1]], dim=1)
    with pytest.raises(ValueError, match="'color' works on images with 1 or 3 channels, got 4"):
        run("color", four, 0.5)
    for name in OP_NAMES:
        if name != "color":
            assert run(name, four, 0.5).shape == four.shape, name


def test_color_desaturates_and_saturates(rgb):
    gray_level = rgb.mean(dim=1, keepdim=True)
    spread = (rgb - gray_level).abs().mean()
    assert (run("color", rgb, 1.0, -1.0) - gray_level).abs().mean() < spread
    assert (run("color", rgb, 1.0, +1.0) - gray_level).abs().mean() > spread


def test_magnitudes_match_torchvision_bins():
    """Bin b of torchvision's 10-bin space is magnitude b / 9 here (translate as a fraction)."""
    side = 33
    space = TorchvisionRandAugment()._augmentation_space(10, (side, side))
    renamed = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x",
               "TranslateY": "translate_y", "AutoContrast": "auto_contrast"}
    magnitude = torch.arange(10, dtype=torch.float64) / 9
    for tv_name, (values, signed) in space.items():
        name = renamed.get(tv_name, tv_name.lower())
        if tv_name == "Color" or name in ("brightness", "contrast", "sharpness"):
            expected = 1.0 + values.double()   # torchvision passes 1 + magnitude as the factor
        elif name.startswith("translate"):
            expected = values.double() / side
        else:
            expected = values.double()
        op = OPS[name]
        assert op.signed == signed, name
        if not op.has_magnitude:
            continue
        ours = op.parameter(magnitude, torch.ones(10))
        if name == "solarize":  # ours keeps m = 0 an identity: threshold above every 8-bit level
            expected = (expected / 255) * 256 / 255
        elif name == "posterize":
            ours = ours.round()
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5, msg=name)


def test_posterize_keeps_fewer_bits_and_solarize_inverts_more(rgb):
    levels = [run("posterize", rgb, m).mul(255).round().unique().numel() for m in (0.25, 1.0)]
    assert levels[1] <= 16 < levels[0]           # 4 bits at magnitude 1
    assert torch.equal(run("solarize", rgb, 1.0), 1 - rgb)


def test_translate_moves_by_the_expected_pixels():
    image = torch.zeros(1, 1, 33, 33)
    image[0, 0, 16, 16] = 1.0
    moved = run("translate_x", image, 1.0, 1.0)
    assert moved[0, 0, 16].argmax().item() == 16 + round(150 / 331 * 33)


def test_randaugment_ops_are_the_papers_fourteen():
    assert len(RANDAUGMENT_OPS) == 14 and "invert" not in RANDAUGMENT_OPS


@pytest.mark.parametrize("bad, hint", [("rotat", "'rotate'"), ("ShearX", "'shear_x'"),
                                       ("AutoContrast", "'auto_contrast'"), ("blur", "")])
def test_unknown_op_names_the_valid_ones(bad, hint):
    with pytest.raises(ValueError, match="valid ops are") as error:
        get_op(bad)
    assert repr(bad) in str(error.value) and hint in str(error.value)


def test_sharpness_needs_three_pixels():
    with pytest.raises(ValueError, match="at least 3 x 3 pixels, got 2 x 5"):
        run("sharpness", torch.rand(1, 1, 2, 5), 0.5)


# the kornia functions that our own geometric and sharpness kernels compute more cheaply
def _kornia_rotate(images, value):
    return transform.rotate(images, value, align_corners=True)


def _kornia_shear(axis):
    def shear(images, value):
        amount = torch.zeros(len(value), 2, dtype=images.dtype)
        amount[:, axis] = value
        return transform.shear(images, amount, align_corners=True)
    return shear


def _kornia_translate(axis):
    def translate(images, value):
        shift = torch.zeros(len(value), 2, dtype=images.dtype)
        shift[:, axis] = value * images.shape[-1 if axis == 0 else -2]
        return transform.translate(images, shift, align_corners=True)
    return translate


KORNIA_KERNELS = {"rotate": _kornia_rotate, "shear_x": _kornia_shear(0),
                  "shear_y": _kornia_shear(1), "translate_x": _kornia_translate(0),
                  "translate_y": _kornia_translate(1), "sharpness": enhance.sharpness}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (6, 1, 9, 13)])
@pytest.mark.parametrize("name", KORNIA_KERNELS)
def test_own_kernels_compute_what_kornia_does(name, shape, dtype):
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    magnitude = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 0.35], dtype=dtype)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0], dtype=dtype)
    value = OPS[name].parameter(magnitude, sign)
    ours = OPS[name].apply(images, magnitude, sign)
    torch.testing.assert_close(ours, KORNIA_KERNELS[name](images, value), atol=1e-5, rtol=0)
