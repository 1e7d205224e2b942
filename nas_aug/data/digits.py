"""scikit-learn's digits as a LightningDataModule with a held-out split for the outer loop."""

from __future__ import annotations

from sklearn.datasets import load_digits

from nas_aug.data._arrays import ArrayDataModule, Arrays


class DigitsDataModule(ArrayDataModule):
    """The 1797 8x8 images of scikit-learn's digits, split into train / held-out / test.

    The split is stratified and depends only on ``seed``. ``val_dataloader()`` gives the
    held-out split, on which the outer loop of a search scores architectures;
    ``test_dataloader()`` gives the test split, kept for final reports. The training order comes
    from an :class:`EpochSeededSampler`, so a resumed fit sees the same batches. Images are
    float32 tensors of shape ``(1, 8, 8)`` in ``[0, 1]``, labels int64.

    Args:
        batch_size: images per batch, for every split.
        heldout_fraction: the share of the images in the held-out split.
        test_fraction: the share of the images in the test split.
        train_fraction: the share of the remaining training images trained on (below 1 for
            quick, low-data runs).
        img_size: resize the images to this side (bilinear, antialiased), once, in
            :meth:`setup`; ``None`` keeps 8.
        seed: the seed of the splits and of the training order.
        num_workers: data-loader worker processes.

    Raises:
        ValueError: a setting out of range (named with what is accepted), or fractions that
            leave no training data or a class without images on one side of a split.

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
    has_test_set = False

    def __init__(
        self,
        batch_size: int = 64,
        heldout_fraction: float = 0.15,
        test_fraction: float = 0.15,
        train_fraction: float = 1.0,
        img_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(
            batch_size=batch_size,
            heldout_fraction=heldout_fraction,
            test_fraction=test_fraction,
            train_fraction=train_fraction,
            img_size=img_size,
            seed=seed,
            num_workers=num_workers,
        )

    def load_arrays(self) -> Arrays:
        pixels, labels = load_digits(return_X_y=True)
        return Arrays((pixels / 16).reshape(-1, *type(self).input_shape), labels)
