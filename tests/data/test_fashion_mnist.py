import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import image_rows, split_tensors
from torch.nn import functional as F

from nas_aug.data import EpochSeededSampler, FashionMNISTDataModule
from nas_aug.data.fashion_mnist import DEFAULT_ROOT, read_idx

SPLITS = ("train", "heldout", "test")
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """``array`` as an idx file, gzip'd when ``path`` ends in .gz."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fashion_root(folder: Path, n_train=200, n_test=50, gz=True, seed=0):
    """A fake Fashion-MNIST: random (hence distinct) images, balanced labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[prefix] = images, labels
    return arrays


@pytest.fixture
def fake_root(tmp_path):
    return tmp_path, write_fashion_root(tmp_path)


def _datamodule(root, **kwargs):
    dm = FashionMNISTDataModule(root, batch_size=32, **kwargs)
    dm.setup()
    return dm


# --- the idx reader -------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([-5, 0, 70000], dtype=np.int32),
     np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), np.array([-3, 4], dtype=np.int16)],
    ids=["uint8-3d", "int32-1d", "float32-2d", "int16-1d"],
)
def test_read_idx_round_trips_plain_and_gzip(tmp_path, array, suffix):
    read = read_idx(write_idx(tmp_path / f"a-idx{suffix}", array))
    assert read.dtype == array.dtype and read.dtype.isnative
    np.testing.assert_array_equal(read, array)
    read[0] = 0  # a writable copy, not a view of the file's bytes


def test_read_idx_checks_the_expected_number_of_dimensions(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="1 dimensions, expected 3"):
        read_idx(path, ndim=3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "not an idx file.*01000801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "not an idx file.*00000701"),
        (b"", "not an idx file.*missing"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x08", "needs 11 bytes, file has 10"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x07\x08", "needs 9 bytes, file has 10"),
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05")[:-6], "corrupt gzip"),
    ],
    ids=["magic", "type-code", "empty", "header", "short", "long", "gzip"],
)
def test_read_idx_rejects_corrupt_files_naming_them(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


# --- the datamodule on a generated root -----------------------------------------------------

def test_splits_are_disjoint_stratified_and_come_from_the_right_files(fake_root):
    root, arrays = fake_root
    dm = _datamodule(root)
    assert dm.sizes == {"train": 180, "heldout": 20, "test": 50}
    split = {name: split_tensors(dm, name) for name in SPLITS}
    train_rows, heldout_rows = image_rows(split["train"][0]), image_rows(split["heldout"][0])
    official = {name: dict(zip(image_rows(torch.from_numpy(images / 255).float()), labels))
                for name, (images, labels) in arrays.items()}
    assert not set(train_rows) & set(heldout_rows)
    assert set(train_rows) | set(heldout_rows) == set(official["train"])
    assert set(image_rows(split["test"][0])) == set(official["t10k"])
    for name, source in (("train", "train"), ("heldout", "train"), ("test", "t10k")):
        images, labels = split[name]
        assert [official[source][row] for row in image_rows(images)] == labels.tolist()
    for name, per_class in (("train", 18), ("heldout", 2), ("test", 5)):
        assert torch.bincount(split[name][1]).tolist() == [per_class] * 10


def test_fractions_take_stratified_subsets(fake_root):
    root, _ = fake_root
    dm = _datamodule(root, heldout_fraction=0.2, train_fraction=0.5, test_fraction=0.4)
    assert dm.sizes == {"train": 80, "heldout": 40, "test": 20}
    for name, per_class in (("train", 8), ("heldout", 4), ("test", 2)):
        assert torch.bincount(split_tensors(dm, name)[1]).tolist() == [per_class] * 10
    full = _datamodule(root, heldout_fraction=0.2)
    def rows(datamodule, split):
        return set(image_rows(split_tensors(datamodule, split)[0]))

    assert rows(full, "heldout") == rows(dm, "heldout")
    assert rows(dm, "train") < rows(full, "train")


def test_images_are_float_in_unit_range_with_native_shape(fake_root):
    root, arrays = fake_root
    dm = _datamodule(root, test_fraction=1.0)
    images, labels = split_tensors(dm, "test")
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.shape == (50, 1, 28, 28)
    expected = torch.from_numpy(arrays["t10k"][0]).float().div(255)
    assert set(image_rows(images)) == set(image_rows(expected))


def test_resize_and_channel_tiling(fake_root):
    root, _ = fake_root
    plain = _datamodule(root)
    dm = _datamodule(root, img_size=16, channels=3)
    assert dm.input_shape == (3, 16, 16)
    for name in SPLITS:
        images = split_tensors(dm, name)[0]
        assert images.shape == (dm.sizes[name], 3, 16, 16)
        assert images.min() >= 0 and images.max() <= 1
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    # same split, and each image is the antialiased bilinear resize of the original
    source = split_tensors(plain, "heldout")[0]
    expected = F.interpolate(source, size=(16, 16), mode="bilinear", antialias=True)
    torch.testing.assert_close(split_tensors(dm, "heldout")[0][:, :1], expected.clamp(0, 1))


def test_plain_files_and_torchvisions_raw_layout_are_found(tmp_path):
    write_fashion_root(tmp_path / "plain", gz=False)
    write_fashion_root(tmp_path / "tv" / "FashionMNIST" / "raw", n_train=100, n_test=20)
    assert _datamodule(tmp_path / "plain").sizes == {"train": 180, "heldout": 20, "test": 50}
    assert _datamodule(tmp_path / "tv").sizes == {"train": 90, "heldout": 10, "test": 20}


def test_download_falls_back_to_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:  # writes what torchvision's download writes, without the network
        def __init__(self, root, download=False):
            calls.append((root, download))
            write_fashion_root(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    dm = FashionMNISTDataModule(tmp_path, download=True)
    dm.setup()
    assert calls == [(str(tmp_path), True)]
    assert dm.sizes == {"train": 180, "heldout": 20, "test": 50}


def test_missing_data_says_how_to_get_it(tmp_path):
    dm = FashionMNISTDataModule(tmp_path / "nowhere")  # nothing is read before setup
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "make data" in message
    assert "download=True" in message and str(tmp_path / "nowhere") in message


def test_mismatched_files_are_rejected(tmp_path):
    write_fashion_root(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(49, dtype=np.uint8))
    with pytest.raises(ValueError, match="50 test images but 49 labels"):
        _datamodule(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(50, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got values from 10"):
        _datamodule(tmp_path)


def test_split_depends_only_on_seed_and_training_order_is_epoch_seeded(fake_root):
    root, _ = fake_root
    heldout = {seed: image_rows(split_tensors(_datamodule(root, seed=seed), "heldout")[0])
               for seed in (1, 2)}
    assert heldout[1] == image_rows(split_tensors(_datamodule(root, seed=1), "heldout")[0])
    assert set(heldout[1]) != set(heldout[2])
    sampler = _datamodule(root, seed=4).train_dataloader().sampler
    assert isinstance(sampler, EpochSeededSampler) and sampler.seed == 4


def test_setup_is_idempotent(fake_root):
    dm = _datamodule(fake_root[0])
    before = dm.test_dataloader().dataset
    dm.setup("fit")
    assert dm.test_dataloader().dataset is before


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"batch_size": 0}, "0"),
        ({"heldout_fraction": 1}, "1"),
        ({"heldout_fraction": 0.0}, "0.0"),
        ({"train_fraction": 0}, "0"),
        ({"train_fraction": 1.5}, "1.5"),
        ({"test_fraction": -0.1}, "-0.1"),
        ({"test_fraction": True}, "True"),
        ({"img_size": 0}, "0"),
        ({"img_size": 16.0}, "16.0"),
        ({"channels": 2}, "2"),
        ({"seed": -1}, "-1"),
        ({"num_workers": -2}, "-2"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(tmp_path, kwargs, bad):
    with pytest.raises(ValueError, match=f"got {bad}"):
        FashionMNISTDataModule(tmp_path, **kwargs)


def test_a_fraction_too_small_to_stratify_says_which_argument(fake_root):
    with pytest.raises(ValueError, match=r"train_fraction=0\.01 asks for 2 of 180"):
        _datamodule(fake_root[0], train_fraction=0.01)


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian():
    start = time.perf_counter()
    dm = FashionMNISTDataModule(batch_size=1000)
    dm.setup()
    assert dm.sizes == {"train": 54000, "heldout": 6000, "test": 10000}
    loaders = {"train": dm.train_dataloader, "heldout": dm.val_dataloader,
               "test": dm.test_dataloader}
    for name, per_class in (("train", 5400), ("heldout", 600), ("test", 1000)):
        labels = loaders[name]().dataset.tensors[1]
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (1000, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= images.min() < images.max() <= 1
    assert time.perf_counter() - start < 3
