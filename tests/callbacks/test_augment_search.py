"""AugmentSearch inside an ordinary fit: training batches augmented, held-out data never."""

import json

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmarks.bench_augment_race import TOYS, Classifier, brightness
from nas_aug import Budget
from nas_aug.augment import Policy
from nas_aug.augment.export import load_policy
from nas_aug.augment.search import RandAugmentSearch
from nas_aug.callbacks import AugmentSearch, OneShotNAS
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space

FAST = dict(max_epochs=1, limit_train_batches=3, limit_val_batches=2, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
OPS = ("rotate", "brightness", "invert")
DADA = dict(method="dada", ops=OPS, update_every=1)  # an outer step at every training step


class Recorder(pl.LightningModule):
    """A small classifier that keeps every input its steps see."""

    def __init__(self, channels=1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(24, 10))
        self.seen = {"train": [], "val": []}

    def forward(self, x):
        return self.net(x)

    def _images(self, batch):
        return batch["pixels"] if isinstance(batch, dict) else batch[0]

    def training_step(self, batch, batch_idx):
        x = self._images(batch)
        self.seen["train"].append(x.detach().clone())
        y = batch["target"] if isinstance(batch, dict) else batch[1]
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(batch[0].clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loaders(n=24, channels=1, batch_size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    train = TensorDataset(torch.rand(n, channels, 12, 12, generator=generator),
                          torch.randint(0, 10, (n,), generator=generator))
    val = TensorDataset(torch.rand(16, channels, 12, 12, generator=generator),
                        torch.randint(0, 10, (16,), generator=generator))
    return (DataLoader(train, batch_size=batch_size),
            DataLoader(val, batch_size=batch_size))


def _contains(tensors, batch):
    return any(t.shape == batch.shape and torch.equal(t, batch) for t in tensors)


@pytest.mark.parametrize("method, options", [("dada", dict(ops=OPS)),
                                             ("randaugment", dict(magnitudes=(0.5, 0.9),
                                                                  presets=("trivialaugment",)))])
def test_training_batches_are_augmented_and_heldout_batches_never(method, options, tmp_path):
    train, val = loaders()
    model = Recorder()
    search = AugmentSearch(method=method, export_dir=tmp_path, probe_every=1, **options) \
        if method == "randaugment" else AugmentSearch(method=method, export_dir=tmp_path,
                                                      **options)
    trainer = pl.Trainer(callbacks=[search], **FAST)
    trainer.fit(model, train, val)

    raw_train = [x for x, _ in train]
    raw_val = [x for x, _ in val]
    # validation_step saw the validation batches exactly as the loader gave them
    assert all(_contains(raw_val, x) for x in model.seen["val"])
    # the user's training_step also scored held-out batches, unaugmented (outer steps)
    heldout_seen = [x for x in model.seen["train"] if _contains(raw_val, x)]
    assert heldout_seen
    # and the real training steps got augmented images: not one raw training batch
    assert not any(_contains(raw_train, x) for x in model.seen["train"])
    assert all(x.min() >= 0 and x.max() <= 1 for x in model.seen["train"])
    # the user's optimizer holds the model's parameters and nothing of the policy
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    # the policy is exported as data, with the search's record beside it
    policy = load_policy(tmp_path / "policy.json")
    assert policy == Policy.from_json(search.result["policy"])
    record = json.loads((tmp_path / "augment_search.json").read_text())
    assert record["method"] == method and record["heldout_batches"] >= 1
    if method == "dada":  # the per-op values after every epoch, as data and as a plot
        assert [entry["epoch"] for entry in record["history"]] == list(range(FAST["max_epochs"]))
        assert record["ops"] == list(OPS) and all(len(entry["probability"]) == len(OPS)
                                                  for entry in record["history"])
        assert (tmp_path / "policy_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not (tmp_path / "policy_history.png").exists()
    # the transfer hook is the user's again
    assert "on_after_batch_transfer" not in vars(model)


def test_dada_moves_the_policy_during_the_fit():
    train, val = loaders()
    search = AugmentSearch(**DADA)
    before = [p.detach().clone() for p in search.method.policy.parameters()]
    pl.Trainer(callbacks=[search], **FAST).fit(Recorder(), train, val)
    assert search.method.updates == 3
    after = list(search.method.policy.parameters())
    assert all(not torch.equal(a.detach(), b) for a, b in zip(after, before))
    assert all(p.grad is None for p in after)  # nothing left behind for the next step


def test_two_searches_in_one_fit_both_augment_and_both_unhook():
    """Two AugmentSearch wrap the module's transfer hook in turn; teardown, in either order,
    leaves the module as it was."""
    train, heldout = loaders()
    model = Recorder()
    first = AugmentSearch(**DADA, seed=0)
    second = AugmentSearch(method="randaugment", num_ops=(1,), magnitudes=(0.5,), seed=1)
    pl.Trainer(callbacks=[first, second], **FAST).fit(model, train, heldout)
    assert first.method.updates == 3 and second.result is not None
    assert "on_after_batch_transfer" not in vars(model)


def test_outer_steps_leave_batch_norm_statistics_to_the_training_steps():
    def fit(callbacks):
        train, val = loaders()
        pl.seed_everything(0)
        model = Recorder()
        pl.Trainer(callbacks=callbacks, **FAST).fit(model, train, val)
        return model.net[1].num_batches_tracked.item()

    tracked_without, tracked_with = fit([]), fit([AugmentSearch(**DADA)])
    assert tracked_with == tracked_without == 3  # the outer steps' forwards left no trace


class DictBatches(Dataset):
    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"pixels": self.images[i], "target": self.targets[i]}


def test_dict_batches_with_a_configured_key():
    train, val = loaders()
    images, targets = train.dataset.tensors
    model = Recorder()
    search = AugmentSearch(**DADA, image_key="pixels")
    pl.Trainer(callbacks=[search], **FAST).fit(
        model, DataLoader(DictBatches(images, targets), batch_size=8), val)
    assert search.method.updates == 3
    assert not any(_contains([images[:8], images[8:16], images[16:]], x)
                   for x in model.seen["train"][-1:])


def test_a_dict_batch_without_the_image_key_names_its_keys():
    train, val = loaders()
    images, targets = train.dataset.tensors
    search = AugmentSearch(**DADA)
    with pytest.raises(ValueError, match=r"key 'image'.*\['pixels', 'target'\].*image_key"):
        pl.Trainer(callbacks=[search], **FAST).fit(
            Recorder(), DataLoader(DictBatches(images, targets), batch_size=8), val)


def test_images_outside_the_unit_range_are_rejected():
    train, val = loaders()
    images, targets = train.dataset.tensors
    bad = DataLoader(TensorDataset(images * 255, targets), batch_size=8)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        pl.Trainer(callbacks=[AugmentSearch(ops=OPS)], **FAST).fit(Recorder(), bad, val)


class TransferringDataModule(pl.LightningDataModule):
    """A datamodule with its own after-transfer hook (it scales images into [0, 1])."""

    def __init__(self):
        super().__init__()
        self.train, self.val = loaders()

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.train.dataset.tensors[0] * 2,
                                        self.train.dataset.tensors[1]), batch_size=8)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.val.dataset.tensors[0] * 2,
                                        self.val.dataset.tensors[1]), batch_size=8)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return x / 2, y


def test_a_datamodule_transfer_hook_runs_first_and_stays_in_place():
    datamodule = TransferringDataModule()
    model = Recorder()
    search = AugmentSearch(**DADA)
    pl.Trainer(callbacks=[search], **FAST).fit(model, datamodule=datamodule)
    assert search.method.updates == 3  # images reached the policy in [0, 1]
    raw_val = [x for x, _ in datamodule.val]
    assert all(_contains(raw_val, x) for x in model.seen["val"])
    assert "on_after_batch_transfer" not in vars(datamodule)


def test_resumed_fit_continues_the_search_exactly(tmp_path):
    def fit(max_epochs, ckpt_path=None, checkpoint=None):
        train, val = loaders()
        pl.seed_everything(0)
        model = Recorder()
        search = AugmentSearch(**DADA)
        trainer = pl.Trainer(**{**FAST, "max_epochs": max_epochs,
                                "enable_checkpointing": bool(checkpoint)},
                             callbacks=[search] + ([checkpoint] if checkpoint else []),
                             default_root_dir=tmp_path)
        trainer.fit(model, train, val, ckpt_path=ckpt_path)
        return search, model

    straight, model_a = fit(2)
    fit(1, checkpoint=ModelCheckpoint(dirpath=tmp_path, filename="epoch1"))
    resumed, model_b = fit(2, ckpt_path=tmp_path / "epoch1.ckpt")
    assert resumed.method.updates == straight.method.updates == 6
    for a, b in zip(straight.method.policy.state_dict().values(),
                    resumed.method.policy.state_dict().values()):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a.keys() == b.keys()
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.result["policy"] == straight.result["policy"]
    assert resumed.result["heldout_batches"] == straight.result["heldout_batches"]


def test_joint_architecture_and_policy_search_in_one_fit(tmp_path):
    space = dict(num_classes=10, in_chans=1, img_size=8, expand_ratios=(3, 6),
                 kernel_sizes=(3, 5))
    model = Recorder()
    model.net = create_space("mobilenet_tiny", **space)
    nas = OneShotNAS(budget=Budget(macs=10_000_000), export_dir=tmp_path / "arch",
                     population_size=4, generations=2, calibration_batches=2, progress=False)
    search = AugmentSearch(**DADA, export_dir=tmp_path / "policy")
    pl.Trainer(callbacks=[nas, search], **FAST).fit(model, datamodule=DigitsDataModule())
    assert search.method.updates == 3
    assert (tmp_path / "arch" / "architecture.json").exists()
    assert load_policy(tmp_path / "policy").name == "dada"


def test_a_fit_resumed_from_its_last_epoch_ends_both_searches(tmp_path):
    """A checkpoint of the last epoch is saved before the searches end (a kill in the search
    leaves it): resuming it trains nothing, and the searches still end, with the results the
    uninterrupted fit found."""
    def fit(ckpt_path=None):
        pl.seed_everything(0)
        model = Recorder()
        model.net = create_space("mobilenet_tiny", num_classes=10, in_chans=1, img_size=8,
                                 expand_ratios=(3, 6), kernel_sizes=(3, 5))
        nas = OneShotNAS(budget=Budget(macs=10_000_000), population_size=4, generations=2,
                         calibration_batches=2, progress=False)
        search = AugmentSearch(**DADA)
        checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
        pl.Trainer(callbacks=[nas, search, checkpoint], **{**FAST, "enable_checkpointing": True}
                   ).fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
        return nas, search, model

    nas, search, _ = fit()
    states = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"].values()
    assert [state["result"] for state in states if "result" in state] == [None, None]
    resumed_nas, resumed_search, _ = fit(tmp_path / "last.ckpt")
    assert resumed_search.result["policy"] == search.result["policy"]
    assert resumed_nas.result.sample == nas.result.sample
    assert resumed_nas.result.score == nas.result.score


class CountingDataset(Dataset):
    """Random images, the size of ``loaders()``'s, that count how often each is read."""

    def __init__(self, n=16):
        generator = torch.Generator().manual_seed(1)
        self.images = torch.rand(n, 1, 12, 12, generator=generator)
        self.labels = torch.randint(0, 10, (n,), generator=generator)
        self.reads = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.reads += 1
        return self.images[index], self.labels[index]


def test_a_joint_fit_reads_one_heldout_batch_per_step_for_both_searches():
    """DARTS and DADA each take an outer step at every training step; they share the step's
    held-out batch instead of reading the held-out data twice."""
    model = Recorder()
    model.net = create_space("mobilenet_tiny", num_classes=10, in_chans=1, img_size=12,
                             expand_ratios=(3, 6), kernel_sizes=(3, 5))
    heldout = CountingDataset()
    loader = DataLoader(heldout, batch_size=4)
    nas = OneShotNAS(strategy="darts", heldout=loader, calibration_batches=1, top_k=1,
                     progress=False)
    search = AugmentSearch(**DADA, heldout=loader)
    train, _ = loaders(channels=1)
    pl.Trainer(callbacks=[nas, search], **{**FAST, "limit_val_batches": 0}).fit(
        model, train_dataloaders=train)
    steps = 3
    assert nas.strategy.updates == search.method.updates == steps
    assert nas._stream is search._stream and nas._stream.consumed == steps
    scored = len(heldout)  # the final scoring of the one top candidate reads it all once
    assert heldout.reads == steps * loader.batch_size + scored


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="dadda"), r"unknown augmentation search method 'dadda' \(did you mean 'dada'"),
    (dict(method="dada", magnitudes=(0.5,)), r"unknown option\(s\) \['magnitudes'\]"),
    (dict(unroll_lr=0), "unroll_lr must be a positive number"),
])
def test_bad_arguments_are_rejected_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentSearch(**kwargs)


def test_fit_without_heldout_data_is_rejected():
    train, _ = loaders()
    with pytest.raises(ValueError, match="AugmentSearch\\(heldout=loader\\)"):
        pl.Trainer(callbacks=[AugmentSearch(ops=OPS)], **FAST).fit(Recorder(), train)


def test_heldout_loader_can_be_given_directly():
    train, val = loaders()
    model = Recorder()
    search = AugmentSearch(**DADA, heldout=val)
    pl.Trainer(callbacks=[search], **FAST).fit(model, train)
    assert search.method.updates == 3 and search._stream.consumed == 3


def test_export_dir_holding_a_policy_is_refused_before_training(tmp_path):
    (tmp_path / "policy.json").write_text("{}")
    train, val = loaders()
    model = Recorder()
    with pytest.raises(FileExistsError, match="already holds a policy"):
        pl.Trainer(callbacks=[AugmentSearch(ops=OPS, export_dir=tmp_path)], **FAST).fit(
            model, train, val)
    assert model.seen["train"] == [] and (tmp_path / "policy.json").read_text() == "{}"


def test_randaugment_needs_a_number_of_epochs():
    train, val = loaders()
    trainer = pl.Trainer(callbacks=[AugmentSearch(method="randaugment")],
                         **{**FAST, "max_epochs": -1, "max_steps": 2})
    with pytest.raises(ValueError, match="needs Trainer\\(max_epochs=...\\)"):
        trainer.fit(Recorder(), train, val)


def test_the_race_falls_back_to_no_augmentation_where_every_op_changes_the_label():
    """The race benchmark's brightness toy (classes told apart by brightness alone): over 8
    seeds (data, model, draws), the race ends on 'none' in at least 6, and never on the
    strongest RandAugment; the misses pick crop_flip, whose zero padding darkens less."""
    winners = []
    for seed in range(8):
        torch.manual_seed(seed)
        method = RandAugmentSearch(num_ops=(2,), magnitudes=(0.3, 0.9), probe_every=1,
                                   probes_per_step=3, seed=seed)
        assert {"none", "trivialaugment", "crop_flip"} <= set(method.candidates)
        trainer = pl.Trainer(callbacks=[AugmentSearch(method=method)],
                             **{**FAST, "max_epochs": 6, "limit_train_batches": None})
        trainer.fit(Classifier(TOYS["brightness"][1]()),
                    DataLoader(brightness(256, seed, heldout=False), batch_size=32, shuffle=True),
                    DataLoader(brightness(128, seed, heldout=True), batch_size=64))
        winners.append(method.candidates[method.survivors[0]])
    assert winners.count("none") >= 6 and (2, 0.9) not in winners, winners
