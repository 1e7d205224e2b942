"""CIFAR-10 as a LightningDataModule, read with torchvision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas_aug.data._arrays import ArrayDataModule, Arrays


def read_cifar10(root: str | Path, download: bool = False) -> Arrays:
    """The official training (50000) and test (10000) sets as uint8 ``(N, 3, 32, 32)`` images
    and int64 labels, read by ``torchvision.datasets.CIFAR10`` from
    ``root/cifar-10-batches-py``; torchvision downloads them first when ``download`` is true."""
    from torchvision.datasets import CIFAR10  # heavy: imported only when reading

    root = Path(root)
    folder = root / CIFAR10.base_folder
    names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    names.append(CIFAR10.meta["filename"])
    missing = [name for name in names if not (folder / name).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}. Pass download=True to let "
            f"torchvision download it into {root} (needs internet), or unpack "
            f"{CIFAR10.filename} ({CIFAR10.url}) into {root}."
        )
    arrays = []
    for train in (True, False):
        try:
            dataset = CIFAR10(str(root), train=train, download=download)
        except RuntimeError as error:  # torchvision's md5 check failed
            raise RuntimeError(
                f"CIFAR-10 in {folder} is incomplete or corrupt ({error}); delete the folder "
                "and pass download=True to fetch it again"
            ) from error
        images = np.asarray(dataset.data, dtype=np.uint8).transpose(0, 3, 1, 2)  # NHWC -> NCHW
        arrays += [images, np.asarray(dataset.targets, dtype=np.int64)]
    return Arrays(*arrays)


class CIFAR10DataModule(ArrayDataModule):
    """CIFAR-10 (50000 + 10000 32x32 colour images, 10 classes) in memory.

    The official 10000 test images are the test split (``test_fraction`` of them, stratified);
    ``heldout_fraction`` of the 50000 training images make the held-out split that
    ``val_dataloader()`` serves to the outer loop of a search, and ``train_fraction`` of the
    rest is trained on. Splits are stratified and depend only on ``seed``; the training order
    comes from an :class:`EpochSeededSampler`. ``img_size`` resizes (bilinear, antialiased) and
    ``channels=1`` averages the colour channels to grey, once, in :meth:`setup`. Images are
    float32 ``(channels, img_size, img_size)`` in ``[0, 1]``, labels int64. Data is read from
    ``root/cifar-10-batches-py`` (torchvision's layout); ``download=True`` fetches it there.

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
