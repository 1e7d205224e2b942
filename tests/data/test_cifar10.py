"""CIFAR-10 on a fake ``cifar-10-batches-bin`` folder written in the binary release's layout
(one label byte, then the 3x32x32 image, per record)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_rows, split_tensors, write_cifar_root
from torch.nn import functional as F

from nas_aug.data import CIFAR10DataModule, EpochSeededSampler
from nas_aug.data.cifar10 import RECORD, read_cifar_batch

SPLITS = ("train", "heldout", "test")


@pytest.fixture
def fake_root(tmp_path):
    return tmp_path, write_cifar_root(tmp_path)


def _datamodule(root, **kwargs):
    dm = CIFAR10DataModule(root, batch_size=16, **kwargs)
    dm.setup()
    return dm


def test_splits_are_disjoint_stratified_and_keep_image_layout(fake_root):
    root, arrays = fake_root
    dm = _datamodule(root)
    assert dm.sizes == {"train": 180, "heldout": 20, "test": 30}
    assert dm.input_shape == (3, 32, 32)
    official = {name: dict(zip(image_rows(torch.from_numpy(images).float() / 255), labels))
                for name, (images, labels) in arrays.items()}
    split = {name: split_tensors(dm, name) for name in SPLITS}
    train_rows, heldout_rows = image_rows(split["train"][0]), image_rows(split["heldout"][0])
    assert not set(train_rows) & set(heldout_rows)
    assert set(train_rows) | set(heldout_rows) == set(official["train"])
    for name, source in (("train", "train"), ("heldout", "train"), ("test", "test")):
        images, labels = split[name]
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape[1:] == (3, 32, 32)
        # content (in the file's CHW order, scaled by 1/255) and label both match the file
        assert [official[source][row] for row in image_rows(images)] == labels.tolist()
    for name, per_class in (("train", 18), ("heldout", 2), ("test", 3)):
        assert torch.bincount(split[name][1]).tolist() == [per_class] * 10
    assert isinstance(dm.train_dataloader().sampler, EpochSeededSampler)


def test_fractions_take_stratified_subsets(fake_root):
    dm = _datamodule(fake_root[0], heldout_fraction=0.2, train_fraction=0.25,
                     test_fraction=2 / 3)
    assert dm.sizes == {"train": 40, "heldout": 40, "test": 20}
    for name, per_class in (("train", 4), ("heldout", 4), ("test", 2)):
        assert torch.bincount(split_tensors(dm, name)[1]).tolist() == [per_class] * 10


def test_grey_and_resize(fake_root):
    root, _ = fake_root
    colour = _datamodule(root)
    dm = _datamodule(root, img_size=16, channels=1)
    assert dm.input_shape == (1, 16, 16)
    for name in SPLITS:
        images = split_tensors(dm, name)[0]
        assert images.shape == (dm.sizes[name], 1, 16, 16)
        assert images.min() >= 0 and images.max() <= 1
    grey = split_tensors(colour, "test")[0].mean(dim=1, keepdim=True)
    expected = F.interpolate(grey, size=(16, 16), mode="bilinear", antialias=True)
    torch.testing.assert_close(split_tensors(dm, "test")[0], expected.clamp(0, 1))


def test_missing_data_says_how_to_get_it(tmp_path):
    dm = CIFAR10DataModule(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert "download=True" in message and "cifar-10-batches-bin" in message
    assert "data_batch_1.bin" in message and str(tmp_path) in message


def test_only_prepare_data_downloads(tmp_path, monkeypatch):
    """Lightning calls prepare_data on one process per machine: the download happens there,
    and setup (on every process) finds the files."""
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, root):
        calls.append(url)
        write_cifar_root(Path(root))

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    dm = CIFAR10DataModule(tmp_path, download=True)
    dm.prepare_data()
    assert len(calls) == 1 and (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").exists()
    dm.setup()
    assert len(calls) == 1 and dm.sizes["train"] > 0
    CIFAR10DataModule(tmp_path).prepare_data()  # no download asked: nothing to do
    assert len(calls) == 1


def test_truncated_or_mislabelled_batches_are_reported(tmp_path):
    write_cifar_root(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    raw = np.fromfile(path, dtype=np.uint8)
    raw[:-1].tofile(path)
    with pytest.raises(ValueError, match="data_batch_3.bin holds .* not a whole number"):
        _datamodule(tmp_path)
    raw[0] = 12  # the first record's label byte
    raw.tofile(path)
    with pytest.raises(ValueError, match="data_batch_3.bin has label 12"):
        read_cifar_batch(path)
    assert RECORD == 3073


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"batch_size": 0}, "0"),
        ({"heldout_fraction": 1.0}, "1.0"),
        ({"train_fraction": 2}, "2"),
        ({"test_fraction": 0}, "0"),
        ({"img_size": -4}, "-4"),
        ({"channels": 4}, "4"),
        ({"seed": -1}, "-1"),
        ({"num_workers": -1}, "-1"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(tmp_path, kwargs, bad):
    with pytest.raises(ValueError, match=f"got {bad}"):
        CIFAR10DataModule(tmp_path, **kwargs)
