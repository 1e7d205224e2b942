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

    ``consumed`` counts the batches handed out; a stream restored with that count continues
    where the saved one stopped (for loaders that iterate in a fixed order, as validation
    loaders do).
    """

    def __init__(self, loader: Any, consumed: int = 0):
        self.loader, self.consumed = loader, consumed
        self._iterator: Iterator[Any] | None = None

    def next(self, trainer: Trainer) -> Any:
        if self._iterator is None:
            self._iterator = iter(self.loader)
            length = len(self.loader) if hasattr(self.loader, "__len__") else 0
            for _ in range(self.consumed % length if length else 0):
                next(self._iterator)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self.loader)
            batch = next(self._iterator, None)
            if batch is None:
                raise ValueError("the held-out loader yields no batches") from None
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
    computed through the strategy like the fit's own step, with logging muted."""
    takes_index = is_param_in_hook_signature(pl_module.training_step, "batch_idx", min_args=2)
    with muted_logging(pl_module):
        output = trainer.strategy.training_step(*((batch, batch_idx) if takes_index
                                                  else (batch,)))
    return output["loss"] if isinstance(output, dict) else output


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
