"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on the path)."""

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_aug import Budget
from nas_aug.supernet import activate, space_of

# small versions of the registered spaces (a space not listed here is built with defaults)
SMALL_SPACES = {
    "mobilenet_tiny": {"num_classes": 10, "in_chans": 1, "img_size": 8,
                       "expand_ratios": [3, 6], "kernel_sizes": [3, 5]},
    "nasbench201": {"C": 4, "N": 1, "in_chans": 1, "img_size": 8},
}


def calibrate(net: nn.Module, input_shape, seed: int = 0) -> nn.Module:
    """Set batch-norm statistics from one random batch through the largest path, so that
    activations do not vanish at initialisation and outputs depend on the sample."""
    torch.manual_seed(seed)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = 1.0
    activate(net, space_of(net).largest())
    with torch.no_grad():
        net.train()(torch.randn(16, *input_shape))
    for norm in norms:
        norm.momentum = 0.1
    return net.eval()


def split_tensors(datamodule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of one split ("train", "heldout" or "test") of a datamodule."""
    loader = {"train": datamodule.train_dataloader, "heldout": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[split]()
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)


def image_rows(images: torch.Tensor) -> list[bytes]:
    """Each image as bytes, to compare splits by content."""
    return [row.numpy().tobytes() for row in images.reshape(len(images), -1)]


class LitClassifier(pl.LightningModule):
    def __init__(self, backbone: nn.Module):  # typed: a LightningCLI config can name it
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def make_trainer(callbacks, **overrides):
    kwargs = dict(max_epochs=1, limit_train_batches=4, limit_val_batches=2, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    return pl.Trainer(callbacks=callbacks, **{**kwargs, **overrides})


def midway_budget(costs):
    smallest = costs(costs.space.smallest()).macs
    return Budget(macs=(smallest + costs(costs.space.largest()).macs) // 2)


def write_cifar_root(root, per_batch=40, n_test=30, seed=0):
    """A fake CIFAR-10 binary release under ``root/cifar-10-batches-bin``: five training batches
    and a test batch of random (hence distinct) images, balanced labels; returns the images as
    NCHW uint8 arrays and the labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)

    def batch(name, n):
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows are CHW
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        np.concatenate([labels[:, None], data], axis=1).tofile(folder / name)
        return data.reshape(n, 3, 32, 32), labels.astype(np.int64)

    train = [batch(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)]
    test = batch("test_batch.bin", n_test)
    return {"train": tuple(np.concatenate(parts) for parts in zip(*train)), "test": test}


def search_result(sample, input_shape, cost, score=None, budget=None, top=(), candidates=(),
                  search_cost=None, strategy="spos"):
    """A SearchResult for ``export_architecture`` with the given fields (top and candidates
    as JSON dicts, the budget as a mapping)."""
    from nas_aug.result import Candidate, SearchResult

    return SearchResult(chosen=Candidate.of(sample, score, cost),
                        top=[Candidate.from_json(c) for c in top],
                        candidates=[Candidate.from_json(c) for c in candidates],
                        strategy=strategy, input_shape=tuple(input_shape),
                        budget=None if budget is None else Budget(**budget),
                        cost=dict(search_cost or {}))


def context_of_two_depths(**settings):
    """A strategy's SearchContext (``settings``: budget, searcher, seed) for a supernet of
    one elastic-depth stage of two linear blocks, with its cost table."""
    from nas_aug.constraints import CostTable
    from nas_aug.space import ElasticDepth, ValueChoice
    from nas_aug.space.elastic import ElasticLinear
    from nas_aug.strategies import SearchContext
    from nas_aug.supernet import space_of

    supernet = nn.Sequential(ElasticDepth("depth", [ElasticLinear(
        4, 4, out_features_choice=ValueChoice(f"b{i}.width", [2, 4])) for i in range(2)]))
    return SearchContext(supernet, space_of(supernet), cost_table=CostTable.build(supernet, (4,)),
                         **settings)


def count_calls(owner, name: str, kill_at: int | None = None, say: str | None = None
                ) -> list[int]:
    """Count the calls of ``owner.name`` (the returned one-item list); SIGKILL this process
    on the ``kill_at``-th; print ``say N`` at each call, if given. For the scripts that tests
    run in a subprocess and kill."""
    import os
    import signal

    function, calls = getattr(owner, name), [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if say:
            print(f"{say} {calls[0]}", flush=True)
        return function(*args, **kwargs)

    setattr(owner, name, counted)
    return calls
