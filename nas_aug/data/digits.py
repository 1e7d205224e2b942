"""scikit-learn's digits as a LightningDataModule with a held-out split for the outer loop."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from nas_aug.data.sampler import EpochSeededSampler


def _check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {value!r}")


class DigitsDataModule(pl.LightningDataModule):
    """The 1797 8x8 images of scikit-learn's digits, split into train / held-out / test.

    The split is stratified and depends only on ``seed``. ``val_dataloader()`` gives the
    held-out split, on which the outer loop of a search scores architectures;
    ``test_dataloader()`` gives the test split, kept for final reports. The training order comes
    from an :class:`EpochSeededSampler`, so a resumed fit sees the same batches. Images are
    float32 tensors of shape ``(1, 8, 8)`` in ``[0, 1]``, labels int64.

    >>> dm = DigitsDataModule(batch_size=32)
    >>> dm.setup()
    >>> dm.sizes
    {'train': 1257, 'heldout': 270, 'test': 270}
    >>> images, labels = next(iter(dm.train_dataloader()))
    >>> images.shape, labels.dtype
    (torch.Size([32, 1, 8, 8]), torch.int64)
    """

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        heldout_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        _check_int("batch_size", batch_size, 1)
        _check_fraction("heldout_fraction", heldout_fraction)
        _check_fraction("test_fraction", test_fraction)
        if heldout_fraction + test_fraction >= 1:
            raise ValueError(
                "heldout_fraction + test_fraction must be below 1 to leave training data, got "
                f"{heldout_fraction!r} + {test_fraction!r}"
            )
        _check_int("seed", seed, 0)
        _check_int("num_workers", num_workers, 0)
        self.batch_size = batch_size
        self.heldout_fraction = heldout_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self._datasets: dict[str, TensorDataset] = {}

    @property
    def sizes(self) -> dict[str, int]:
        """Number of examples per split (empty before :meth:`setup`)."""
        return {name: len(dataset) for name, dataset in self._datasets.items()}

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        pixels, labels = load_digits(return_X_y=True)
        images = torch.tensor(pixels / 16, dtype=torch.float32).reshape(-1, *self.input_shape)
        targets = torch.tensor(labels, dtype=torch.int64)
        n = len(labels)
        rest, test = train_test_split(
            np.arange(n),
            test_size=round(self.test_fraction * n),
            stratify=labels,
            random_state=self.seed,
        )
        train, heldout = train_test_split(
            rest,
            test_size=round(self.heldout_fraction * n),
            stratify=labels[rest],
            random_state=self.seed,
        )
        self._datasets = {
            name: TensorDataset(images[index], targets[index])
            for name, index in (("train", train), ("heldout", heldout), ("test", test))
        }

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
