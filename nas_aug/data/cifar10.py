"""CIFAR-10 as a LightningDataModule, read from the binary release (no pickle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas_aug.data._arrays import ArrayDataModule, Arrays

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32x32 planes


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, 3, 32, 32)`` and labels int64 of one binary batch file (N is 10000
    in the release); a file that is not whole records, or has a label outside 0..9, raises
    ``ValueError`` naming it."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise ValueError(f"{path} holds {raw.size} bytes, not a whole number of CIFAR-10 "
                         f"records of {RECORD} bytes")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path} has label {labels.max()}; CIFAR-10 labels are 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def read_cifar10(root: str | Path, download: bool = False) -> Arrays:
    """The official training (50000) and test (10000) sets as uint8 ``(N, 3, 32, 32)`` images
    and int64 labels, from ``root/cifar-10-batches-bin`` (the binary release, read without
    pickle); with ``download`` torchvision's downloader fetches and unpacks it first."""
    root = Path(root)
    folder = root / FOLDER
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URL, str(root))
        missing = [name for name in missing if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}. Pass download=True to "
            f"download it into {root} (needs internet), or unpack {URL} into {root}.")
    train = [read_cifar_batch(folder / name) for name in TRAIN_FILES]
    test_images, test_labels = read_cifar_batch(folder / TEST_FILE)
    return Arrays(np.concatenate([images for images, _ in train]),
                  np.concatenate([labels for _, labels in train]), test_images, test_labels)


class CIFAR10DataModule(ArrayDataModule):
    """CIFAR-10 (50000 + 10000 32x32 colour images, 10 classes) in memory.

    The official 10000 test images are the test split (``test_fraction`` of them, stratified);
    ``heldout_fraction`` of the 50000 training images make the held-out split that
    ``val_dataloader()`` serves to the outer loop of a search, and ``train_fraction`` of the
    rest is trained on. Splits are stratified and depend only on ``seed``; the training order
    comes from an :class:`EpochSeededSampler`. ``img_size`` resizes (bilinear, antialiased) and
    ``channels=1`` averages the colour channels to grey, once, in :meth:`setup`. Images are
    float32 ``(channels, img_size, img_size)`` in ``[0, 1]``, labels int64. Data is read from
    ``root/cifar-10-batches-bin`` (the binary release); ``download=True`` fetches it there.

    Args:
        root: the folder the data is read from (it holds ``cifar-10-batches-bin``).
        batch_size: images per batch, for every split.
        heldout_fraction: the share of the training images in the held-out split.
        train_fraction: the share of the remaining training images trained on.
        test_fraction: the share of the official test images in the test split.
        img_size: resize the images to this side, once, in :meth:`setup` (``None``: keep).
        channels: 3 (colour) or 1 (the colour channels averaged to grey).
        seed: the seed of the splits and of the training order.
        num_workers: data-loader worker processes.
        download: fetch missing files into ``root`` (needs internet).

    Raises:
        ValueError: a fraction or channel count out of range.
        FileNotFoundError: the data is not under ``root`` and ``download`` is off, named
            with the files looked for.

    >>> dm = CIFAR10DataModule("data", img_size=16, channels=1)
    >>> dm.input_shape, dm.classes[:2]
    ((1, 16, 16), ('airplane', 'automobile'))
    """

    num_classes = 10
    input_shape = (3, 32, 32)
    has_test_set = True
    classes = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")

    def __init__(
        self,
        root: str | Path,
        batch_size: int = 128,
        heldout_fraction: float = 0.1,
        train_fraction: float = 1.0,
        test_fraction: float = 1.0,
        img_size: int | None = None,
        channels: int = 3,
        seed: int = 0,
        num_workers: int = 0,
        download: bool = False,
    ):
        super().__init__(
            batch_size=batch_size,
            heldout_fraction=heldout_fraction,
            test_fraction=test_fraction,
            train_fraction=train_fraction,
            seed=seed,
            num_workers=num_workers,
            img_size=img_size,
            channels=channels,
        )
        self.root = Path(root)
        self.download = download

    def load_arrays(self) -> Arrays:
        return read_cifar10(self.root, self.download)
