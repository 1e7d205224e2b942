"""The one place that reaches into Lightning's private parts.

The search callbacks need a few things Lightning has no public API for: the fit's validation
source (to score on it outside the validation loop), the object whose
``on_after_batch_transfer`` Lightning will call (to augment training batches after transfer),
and the trainer's ``validating`` state (so the user's batch hooks see held-out batches as
validation data); and, mirroring what Lightning does privately, a sampler put at an epoch.
Each is reached here only, so a Lightning upgrade that moves one is one file
to fix. Checked against Lightning 2.6.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.model_helpers import is_overridden


def val_source(trainer: Trainer) -> Any:
    """The fit's validation source (a ``_DataLoaderSource``: datamodule, module or loaders)."""
    return trainer.fit_loop.epoch_loop.val_loop._data_source


def batch_transfer_owner(trainer: Trainer, pl_module: LightningModule) -> Any:
    """The module or datamodule whose ``on_after_batch_transfer`` Lightning runs: the
    datamodule's when the datamodule overrides it, else the module's (and the datamodule's
    when neither overrides it, which keeps Lightning from warning that the module does)."""
    selector = trainer._data_connector._datahook_selector
    owner = pl_module if selector is None else selector.get_instance("on_after_batch_transfer")
    if owner is pl_module and trainer.datamodule is not None and \
            not is_overridden("on_after_batch_transfer", pl_module):
        owner = trainer.datamodule
    return owner


@contextlib.contextmanager
def as_validation(trainer: Trainer) -> Iterator[None]:
    """The trainer in its validating state for the block (batch hooks then treat the data as
    validation data), in the state it was in afterwards."""
    stage = trainer.state.stage
    trainer.validating = True
    try:
        yield
    finally:
        trainer.state.stage = stage


def set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Put ``loader``'s sampler (and its batch sampler's) at ``epoch``, as Lightning does at
    the start of each training epoch, so an iteration outside the loop sees the same order
    whether the fit ran through or resumed from a checkpoint at its end."""
    for sampler in (getattr(loader, "sampler", None),
                    getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)
