import lightning.pytorch as pl
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from nas_aug.data import DigitsDataModule, EpochSeededSampler

SPLITS = ("train", "heldout", "test")


def _datamodule(**kwargs) -> DigitsDataModule:
    dm = DigitsDataModule(**kwargs)
    dm.setup()
    return dm


def _split(dm: DigitsDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of ``split``, read through its public dataloader."""
    loader = {
        "train": dm.train_dataloader,
        "heldout": dm.val_dataloader,
        "test": dm.test_dataloader,
    }[split]()
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)


def _rows(dm: DigitsDataModule, split: str) -> set[bytes]:
    images = _split(dm, split)[0]
    return {row.numpy().tobytes() for row in images.reshape(len(images), -1)}


@pytest.mark.parametrize(("heldout_fraction", "test_fraction"), [(0.15, 0.15), (0.1, 0.25)])
def test_splits_are_disjoint_cover_everything_and_have_requested_sizes(
    heldout_fraction, test_fraction
):
    dm = _datamodule(heldout_fraction=heldout_fraction, test_fraction=test_fraction)
    assert abs(dm.sizes["heldout"] - heldout_fraction * 1797) <= 1
    assert abs(dm.sizes["test"] - test_fraction * 1797) <= 1
    assert sum(dm.sizes.values()) == 1797
    rows = [_rows(dm, split) for split in SPLITS]
    # The 1797 digits images are all distinct, so content identifies an example.
    all_images = torch.tensor(load_digits().data / 16, dtype=torch.float32)
    assert set.union(*rows) == {row.numpy().tobytes() for row in all_images}
    assert sum(len(r) for r in rows) == 1797


def test_every_class_is_in_every_split():
    dm = _datamodule()
    for split in SPLITS:
        assert _split(dm, split)[1].unique().tolist() == list(range(10))


def test_tensors_have_expected_range_dtype_and_shape():
    dm = _datamodule()
    for split in SPLITS:
        images, labels = _split(dm, split)
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape == (dm.sizes[split], *DigitsDataModule.input_shape)
        assert images.min() == 0 and images.max() == 1
    assert dm.num_classes == 10


def test_setup_is_idempotent():
    dm = _datamodule()
    before = dm.test_dataloader().dataset
    dm.setup("fit")
    assert dm.test_dataloader().dataset is before


def test_split_depends_on_seed():
    assert _rows(_datamodule(seed=1), "test") == _rows(_datamodule(seed=1), "test")
    assert _rows(_datamodule(seed=1), "test") != _rows(_datamodule(seed=2), "test")


def test_sampler_order_depends_only_on_seed_and_epoch():
    torch.manual_seed(0)
    sampler = EpochSeededSampler(100, seed=7)
    first = list(sampler)
    torch.manual_seed(1)
    assert list(sampler) == first
    assert sorted(first) == list(range(100)) and len(sampler) == 100
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    resumed = EpochSeededSampler(100, seed=7)
    resumed.set_epoch(1)
    assert list(resumed) == second
    assert list(EpochSeededSampler(100, seed=8)) != first


class _Recorder(pl.LightningModule):
    """A linear classifier that records the first training batch of each epoch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(64, 10)
        self.first_batches: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        images, labels = batch
        if batch_idx == 0:
            self.first_batches.append(images.clone())
        return nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self.layer(images.flatten(1)), labels))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fit_sets_the_sampler_epoch(tmp_path):
    dm = DigitsDataModule(batch_size=32, seed=3)
    model = _Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.train_dataloader.sampler.epoch == 1
    train_images = trainer.train_dataloader.dataset.tensors[0]
    expected = EpochSeededSampler(len(train_images), seed=3)
    for epoch, batch in enumerate(model.first_batches):
        expected.set_epoch(epoch)
        assert torch.equal(batch, train_images[list(expected)[:32]])
    assert len(model.first_batches) == 2


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"batch_size": 0}, "0"),
        ({"heldout_fraction": 1.5}, "1.5"),
        ({"test_fraction": 0}, "0"),
        ({"heldout_fraction": 0.6, "test_fraction": 0.4}, "0.6"),
        ({"seed": -1}, "-1"),
        ({"num_workers": -2}, "-2"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, bad):
    with pytest.raises(ValueError, match=f"got {bad}"):
        DigitsDataModule(**kwargs)


def test_sampler_rejects_empty_range():
    with pytest.raises(ValueError, match="got 0"):
        EpochSeededSampler(0)
