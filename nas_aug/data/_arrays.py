"""What the in-memory datamodules share: argument checks, the seeded stratified split, the
conversion of arrays to float tensors (resize, grey / RGB) and the loaders."""

from __future__ import annotations

from typing import NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from nas_aug.data.sampler import EpochSeededSampler
from nas_aug.validation import check_fraction, check_int

SPLITS = ("train", "heldout", "test")


class Arrays(NamedTuple):
    """What :meth:`ArrayDataModule.load_arrays` returns.

    Images are ``(N, C, H, W)`` or ``(N, H, W)`` arrays, uint8 in ``[0, 255]`` or float in
    ``[0, 1]``; labels are integer arrays in ``[0, num_classes)``. ``test_*`` hold the official
    test set; they are ``None`` for a dataset whose test split is drawn from one pool.
    """

    images: np.ndarray
    labels: np.ndarray
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def stratified_split(
    index: np.ndarray, labels: np.ndarray, size: int, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into ``(rest, taken)`` with ``len(taken) == size``, stratified by
    ``labels[index]``; ``name`` says which argument asked for it when the split is impossible."""
    try:
        rest, taken = train_test_split(
            index, test_size=size, stratify=labels[index], random_state=seed
        )
    except ValueError as error:
        raise ValueError(
            f"{name} asks for {size} of {len(index)} examples, which cannot be split with every "
            f"one of {len(np.unique(labels[index]))} classes on both sides: {error}"
        ) from None
    return rest, taken


def stratified_subset(
    index: np.ndarray, labels: np.ndarray, fraction: float, seed: int, name: str
) -> np.ndarray:
    """A stratified ``fraction`` of ``index`` (``index`` itself when ``fraction == 1``)."""
    if fraction == 1:
        return index
    return stratified_split(index, labels, round(fraction * len(index)), seed, name)[1]


def to_tensor(images: np.ndarray, img_size: int | None, channels: int | None) -> torch.Tensor:
    """float32 ``(N, C, H, W)`` in ``[0, 1]``: uint8 scaled by 1/255, RGB averaged to grey for
    ``channels=1``, grey tiled for ``channels=3``, resized (bilinear, antialiased) to
    ``img_size``; ``None`` keeps the native channels / size.

    >>> to_tensor(np.full((2, 8, 8), 255, dtype=np.uint8), img_size=4, channels=3).shape
    torch.Size([2, 3, 4, 4])
    """
    if images.ndim == 3:
        images = images[:, None]
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    if channels == 1 and x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if img_size is not None and x.shape[-2:] != (img_size, img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True)
        x = x.clamp_(0, 1)
    if channels == 3 and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.contiguous()


class ArrayDataModule(pl.LightningDataModule):
    """Base class of the in-memory datamodules: a subclass sets ``num_classes``,
    ``input_shape`` (the native ``(C, H, W)``) and ``has_test_set``, and implements
    :meth:`load_arrays`; this class splits, converts and serves the arrays.

    With an official test set (``has_test_set = True``), ``heldout_fraction`` of the training
    set is held out, ``train_fraction`` of the rest is trained on and ``test_fraction`` of the
    test set is tested on. Without one, ``test_fraction`` and ``heldout_fraction`` of the one
    pool make the test and held-out splits and the rest is trained on. Every split is stratified
    and depends only on ``seed``; the training order comes from an :class:`EpochSeededSampler`.
    ``img_size`` and ``channels`` (1 or 3) resize and grey / tile the images once, in
    :meth:`setup`; the instance's ``input_shape`` is the shape it serves.

    >>> class Noise(ArrayDataModule):
    ...     num_classes, input_shape, has_test_set = 2, (1, 4, 4), False
    ...     def load_arrays(self):
    ...         rng = np.random.default_rng(0)
    ...         return Arrays(rng.random((40, 4, 4)), np.arange(40) % 2)
    >>> dm = Noise(batch_size=8, heldout_fraction=0.25, test_fraction=0.25, channels=3)
    >>> dm.setup()
    >>> dm.sizes, dm.input_shape
    ({'train': 20, 'heldout': 10, 'test': 10}, (3, 4, 4))
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    has_test_set: bool

    def __init__(
        self,
        *,
        batch_size: int,
        heldout_fraction: float,
        test_fraction: float,
        train_fraction: float = 1.0,
        seed: int = 0,
        num_workers: int = 0,
        img_size: int | None = None,
        channels: int | None = None,
    ):
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_fraction("heldout_fraction", heldout_fraction)
        check_fraction("test_fraction", test_fraction, allow_one=self.has_test_set)
        if not self.has_test_set and heldout_fraction + test_fraction >= 1:
            raise ValueError(
                "heldout_fraction + test_fraction must be below 1 to leave training data, got "
                f"{heldout_fraction!r} + {test_fraction!r}"
            )
        check_fraction("train_fraction", train_fraction, allow_one=True)
        check_int("seed", seed, 0)
        check_int("num_workers", num_workers, 0)
        if img_size is not None:
            check_int("img_size", img_size, 1)
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        self.batch_size = batch_size
        self.heldout_fraction = heldout_fraction
        self.test_fraction = test_fraction
        self.train_fraction = train_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.img_size = img_size
        self.channels = channels
        native = type(self).input_shape
        self.input_shape = (
            channels or native[0],
            img_size or native[1],
            img_size or native[2],
        )
        self._datasets: dict[str, TensorDataset] = {}

    def load_arrays(self) -> Arrays:
        """Read the whole dataset; called once, by the first :meth:`setup`."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Download the files if this data module downloads (``download=True``): Lightning
        calls this on one process per machine before any process's :meth:`setup` reads them."""
        if getattr(self, "download", False):
            self.load_arrays()

    @property
    def sizes(self) -> dict[str, int]:
        """Number of examples per split (empty before :meth:`setup`)."""
        return {name: len(dataset) for name, dataset in self._datasets.items()}

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        arrays = self.load_arrays()
        labels = np.asarray(arrays.labels)
        n = len(labels)
        if self.has_test_set:
            test_labels = np.asarray(arrays.test_labels)
            rest, heldout = stratified_split(
                np.arange(n), labels, round(self.heldout_fraction * n), self.seed,
                f"heldout_fraction={self.heldout_fraction!r}",
            )
            test = stratified_subset(
                np.arange(len(test_labels)), test_labels, self.test_fraction, self.seed,
                f"test_fraction={self.test_fraction!r}",
            )
            sources = {"train": arrays.images, "heldout": arrays.images,
                       "test": arrays.test_images}
            targets = {"train": labels, "heldout": labels, "test": test_labels}
        else:
            rest, test = stratified_split(
                np.arange(n), labels, round(self.test_fraction * n), self.seed,
                f"test_fraction={self.test_fraction!r}",
            )
            rest, heldout = stratified_split(
                rest, labels, round(self.heldout_fraction * n), self.seed,
                f"heldout_fraction={self.heldout_fraction!r}",
            )
            sources = dict.fromkeys(SPLITS, arrays.images)
            targets = dict.fromkeys(SPLITS, labels)
        train = stratified_subset(
            rest, labels, self.train_fraction, self.seed, f"train_fraction={self.train_fraction!r}"
        )
        datasets = {}
        for split, index in zip(SPLITS, (train, heldout, test)):
            y = targets[split][index]
            if y.min() < 0 or y.max() >= self.num_classes:
                raise ValueError(
                    f"{type(self).__name__}: labels must lie in [0, {self.num_classes}), got "
                    f"values from {y.min()} to {y.max()}"
                )
            images = to_tensor(sources[split][index], self.img_size, self.channels)
            if images.shape[1:] != self.input_shape:
                raise ValueError(
                    f"{type(self).__name__}: images have shape {tuple(images.shape[1:])}, "
                    f"expected {self.input_shape}"
                )
            datasets[split] = TensorDataset(images, torch.as_tensor(y, dtype=torch.int64))
        self._datasets = datasets

    def _loader(self, split: str, **kwargs) -> DataLoader:
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(len(self._datasets["train"]), self.seed)
        return self._loader("train", sampler=sampler, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader("heldout")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
