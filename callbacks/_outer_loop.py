"""Lightning plumbing shared by the search callbacks: held-out data, and the user's own loss."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature


def val_source(trainer: Trainer):
    # Lightning keeps the fit's validation source here (a datamodule, module or loaders).
    return trainer.fit_loop.epoch_loop.val_loop._data_source


def check_heldout_available(trainer: Trainer, heldout: Any, who: str) -> None:
    """Fail in ``setup`` when the fit has no held-out data and none was given."""
    if heldout is None and not val_source(trainer).is_defined():
        raise ValueError(f"{who} scores its choices on held-out data but this fit has none: "
                         "give the datamodule (or module) a val_dataloader, pass "
                         f"val_dataloaders to fit, or pass {who}(heldout=loader)")


def heldout_loader(trainer: Trainer, heldout: Any, who: str) -> Any:
    """The loader to score on: ``heldout`` if given, else the fit's validation loader."""
    if heldout is None:
        heldout = val_source(trainer).dataloader()
    if isinstance(heldout, dict):
        raise ValueError(f"the fit has several held-out loaders {sorted(heldout)}; pass the "
                         f"one to score on as {who}(heldout=loader)")
    if isinstance(heldout, (list, tuple)):
        heldout = heldout[0]
    return heldout


def to_device_as_heldout(trainer: Trainer, batch: Any) -> Any:
    """Move a held-out batch to the fit's device through the module's transfer hooks, which
    see it as validation data (so training-only augmentation leaves it alone)."""
    was_training = trainer.training
    trainer.validating = True
    try:
        return trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))
    finally:
        trainer.training = was_training


class HeldOutStream:
    """Held-out batches on the fit's device, one after another without end, in loader order.

    With several processes, process ``rank`` of ``world_size`` takes every ``world_size``-th
    batch starting at its rank, so the ranks score different batches and their outer
    gradients, averaged, cover ``world_size`` batches. ``consumed`` counts the batches handed
    out; a stream restored with that count continues where the saved one stopped (for loaders
    that iterate in a fixed order, as validation loaders do).
    """

    def __init__(self, loader: Any, consumed: int = 0, rank: int = 0, world_size: int = 1):
        self.loader, self.consumed = loader, consumed
        self.rank, self.world_size = rank, world_size
        self._iterator: Iterator[Any] | None = None
        self._position = 0  # index of the next batch the iterator yields

    def _advance(self) -> Any:
        if self._iterator is None:
            self._iterator, self._position = iter(self.loader), 0
        batch = next(self._iterator, None)
        if batch is None:
            self._iterator, self._position = iter(self.loader), 0
            batch = next(self._iterator, None)
            if batch is None:
                raise ValueError("the held-out loader yields no batches")
        self._position += 1
        return batch

    def next(self, trainer: Trainer) -> Any:
        length = len(self.loader) if hasattr(self.loader, "__len__") else 0
        target = self.consumed * self.world_size + self.rank  # in the endless stream
        if length:
            target %= length
            if self._iterator is None or self._position > target:
                self._iterator = None
        while True:
            batch = self._advance()
            if not length or self._position - 1 == target:
                break
        self.consumed += 1
        return to_device_as_heldout(trainer, batch)


@contextlib.contextmanager
def muted_logging(pl_module: LightningModule) -> Iterator[None]:
    """Extra runs of the user's ``training_step`` log nothing: only the real step's metrics
    reach the logger."""
    noop: Callable[..., None] = lambda *args, **kwargs: None  # noqa: E731
    pl_module.log, pl_module.log_dict = noop, noop
    try:
        yield
    finally:
        del pl_module.log, pl_module.log_dict


def user_loss(trainer: Trainer, pl_module: LightningModule, batch: Any,
              batch_idx: int) -> torch.Tensor | None:
    """The loss the user's ``training_step`` returns for ``batch`` (``None`` if it skips it),
    in the precision's training context, with logging muted. It calls the module itself, not
    the strategy's wrapper: under DDP, a forward through the wrapper expects the gradient
    synchronisation of a ``backward`` that an outer step does not run."""
    takes_index = is_param_in_hook_signature(pl_module.training_step, "batch_idx", min_args=2)
    with muted_logging(pl_module), trainer.precision_plugin.train_step_context():
        output = pl_module.training_step(*((batch, batch_idx) if takes_index else (batch,)))
    return output["loss"] if isinstance(output, dict) else output


def mean_over_processes(trainer: Trainer) -> Callable[[torch.Tensor], torch.Tensor]:
    """Average a tensor over the fit's processes (the identity on one process)."""
    if trainer.world_size == 1:
        return lambda tensor: tensor
    return lambda tensor: trainer.strategy.reduce(tensor, reduce_op="mean")


class SkippedBatch(Exception):
    """The user's ``training_step`` returned ``None`` for a batch: no outer step this time."""


def seeded_user_loss(trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                     seed: int) -> torch.Tensor:
    """:func:`user_loss` with the global RNG (dropout, ...) seeded by ``seed`` and restored
    afterwards, so repeated calls within one outer step see the same randomness and the fit's
    own random stream is left as it was. Raises :class:`SkippedBatch` for a skipped batch."""
    devices = [torch.cuda.current_device()] if pl_module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        loss = user_loss(trainer, pl_module, batch, batch_idx)
    if loss is None:
        raise SkippedBatch
    return loss
