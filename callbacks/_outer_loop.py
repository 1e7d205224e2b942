"""The outer-loop driver shared by the search callbacks (as Lightning's ``BaseFinetuning`` is
a base that owns the hook flow): held-out data, the user's own loss, and one
:class:`~nas_aug.bilevel.OuterStep` per training step.

:class:`OuterLoop` checks that the fit has held-out data, opens one held-out stream per fit
and source (the search callbacks of one fit share it: each training step fetches at most one
held-out batch, whichever callback asks first), times the training, and builds each step's
``OuterStep`` around the user's ``training_step``, run with seeded randomness, muted logging
and the model's buffers restored afterwards. Subclasses decide what to do with the step.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature

from ..bilevel import OuterStep, preserved_buffers
from ..validation import check_positive
from ._lightning import as_validation, val_source

# per fit (trainer): one held-out stream per source ("val" or the id of a given loader)
_STREAMS: weakref.WeakKeyDictionary[Trainer, dict[Any, HeldOutStream]] = \
    weakref.WeakKeyDictionary()


class SkippedBatch(Exception):
    """The user's ``training_step`` returned ``None`` for a batch: no outer step this time."""


def to_device(trainer: Trainer, batch: Any) -> Any:
    """A batch in the fit's precision on the fit's device, through the module's transfer
    hooks (as Lightning moves batches)."""
    return trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))


def to_device_as_heldout(trainer: Trainer, batch: Any) -> Any:
    """:func:`to_device` with the hooks seeing the batch as validation data (so
    training-only augmentation leaves it alone)."""
    with as_validation(trainer):
        return to_device(trainer, batch)


class HeldOutStream:
    """Held-out batches on the fit's device, one after another without end, in loader order.

    With several processes, process ``rank`` of ``world_size`` takes every ``world_size``-th
    batch starting at its rank, so the ranks score different batches and their outer
    gradients, averaged, cover ``world_size`` batches. ``consumed`` counts the batches handed
    out; a stream restored with that count continues where the saved one stopped (for loaders
    that iterate in a fixed order, as validation loaders do). :meth:`batch_at` hands out one
    batch per training step, the same to every caller at that step.
    """

    def __init__(self, loader: Any, consumed: int = 0, rank: int = 0, world_size: int = 1):
        self.loader, self.consumed = loader, consumed
        self.rank, self.world_size = rank, world_size
        self._iterator: Iterator[Any] | None = None
        self._position = 0  # index of the next batch the iterator yields
        self._last: tuple[int, Any] | None = None  # (training step, its batch)

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

    def batch_at(self, step: int, trainer: Trainer) -> Any:
        """The held-out batch of training step ``step``: fetched on the first call."""
        if self._last is None or self._last[0] != step:
            self._last = (step, self.next(trainer))
        return self._last[1]


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


LossFunction = Callable[[LightningModule, Any], torch.Tensor]


def user_loss(trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
              loss: LossFunction | None = None) -> torch.Tensor | None:
    """The loss the user's ``training_step`` returns for ``batch`` (``None`` if it skips it),
    or ``loss(pl_module, batch)`` where the user gave one, in the precision's training
    context, with logging muted. It calls the module itself, not the strategy's wrapper:
    under DDP, a forward through the wrapper expects the gradient synchronisation of a
    ``backward`` that an outer step does not run."""
    with muted_logging(pl_module), trainer.precision_plugin.train_step_context():
        if loss is not None:
            return loss(pl_module, batch)
        takes_index = is_param_in_hook_signature(pl_module.training_step, "batch_idx",
                                                 min_args=2)
        output = pl_module.training_step(*((batch, batch_idx) if takes_index else (batch,)))
    return output["loss"] if isinstance(output, dict) else output


def seeded_user_loss(trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                     seed: int, loss: LossFunction | None = None) -> torch.Tensor:
    """:func:`user_loss` with the global RNG (dropout, ...) seeded by ``seed`` and restored
    afterwards, so repeated calls within one outer step see the same randomness and the fit's
    own random stream is left as it was. Raises :class:`SkippedBatch` for a skipped batch."""
    devices = [torch.cuda.current_device()] if pl_module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        value = user_loss(trainer, pl_module, batch, batch_idx, loss)
    if value is None:
        raise SkippedBatch
    return value


def mean_over_processes(trainer: Trainer) -> Callable[[torch.Tensor], torch.Tensor]:
    """Average a tensor over the fit's processes (the identity on one process)."""
    if trainer.world_size == 1:
        return lambda tensor: tensor
    return lambda tensor: trainer.strategy.reduce(tensor, reduce_op="mean")


class OuterLoop(Callback):
    """Base of the callbacks that train outer variables on held-out data inside the user's fit.

    Subclasses call :meth:`check_fit` in ``setup``, call ``super()`` in the hooks they
    override, run :meth:`outer_step` from ``on_train_batch_start`` and :meth:`check_searched`
    before they export; ``takes_outer_steps`` says whether they need the held-out stream at
    all. Their state includes :meth:`outer_state`, restored by :meth:`load_outer_state`.
    ``loss(module, batch)``, where given, replaces the user's ``training_step`` as the loss
    of the outer steps (a fit under manual optimization needs one: its ``training_step``
    steps the user's optimizers).

    >>> from nas_aug.callbacks import AugmentSearch, OneShotNAS
    >>> issubclass(OneShotNAS, OuterLoop) and issubclass(AugmentSearch, OuterLoop)
    True
    >>> [OneShotNAS(strategy=name).takes_outer_steps for name in ("spos", "darts")]
    [False, True]
    """

    def __init__(self, heldout: Any = None, unroll_lr: float | None = None, seed: int = 0,
                 loss: LossFunction | None = None):
        if unroll_lr is not None:
            check_positive("unroll_lr", unroll_lr,
                           hint=" or None (the learning rate of the fit's first optimizer)")
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be a function (module, batch) -> loss tensor or None "
                             f"(the module's training_step), got {loss!r}")
        self.heldout, self.unroll_lr, self.seed, self.loss = heldout, unroll_lr, seed, loss
        self.train_seconds = 0.0  # summed over resumed fits
        self.outer_steps = 0  # taken (not skipped), summed over resumed fits
        self._stream: HeldOutStream | None = None
        self._heldout_consumed = 0
        self._trained = False  # this fit ran its training (on_train_start)
        self.result: Any = None  # what the search found, once it has ended

    @property
    def takes_outer_steps(self) -> bool:
        return True

    def check_fit(self, trainer: Trainer, pl_module: LightningModule, what: str) -> None:
        """Fail in ``setup`` when the fit has no held-out data and none was given, or when
        outer steps (of ``what``) would run a ``training_step`` that steps the user's
        optimizers itself (manual optimization) and no ``loss`` was given."""
        who = type(self).__name__
        if self.heldout is None and not val_source(trainer).is_defined():
            raise ValueError(f"{who} scores its choices on held-out data but this fit has "
                             "none: give the datamodule (or module) a val_dataloader, pass "
                             f"val_dataloaders to fit, or pass {who}(heldout=loader)")
        if self.takes_outer_steps and self.loss is None and \
                not pl_module.automatic_optimization:
            raise ValueError(
                f"{who} ({what}) takes an outer step on held-out batches with the loss of "
                f"your training_step, but {type(pl_module).__name__} uses manual "
                "optimization, so that training_step would also run your manual_backward and "
                f"optimizer steps on held-out data: pass {who}(loss=lambda module, batch: "
                "...) returning a batch's loss without stepping, or use automatic "
                "optimization")

    def check_searched(self, what: str) -> None:
        """Refuse to report a search in which every outer step was skipped."""
        if self.takes_outer_steps and self.outer_steps == 0:
            raise RuntimeError(
                f"{type(self).__name__} ({what}) took no outer step in this fit: the loss of "
                "every step was None (training_step skipped its batch), so nothing was "
                "searched and nothing is exported; make training_step return a loss for "
                "held-out batches, or pass loss=")

    def heldout_loader(self, trainer: Trainer) -> Any:
        """The loader to score on: ``heldout`` if given, else the fit's validation loader."""
        heldout = val_source(trainer).dataloader() if self.heldout is None else self.heldout
        if isinstance(heldout, dict):
            raise ValueError(f"the fit has several held-out loaders {sorted(heldout)}; pass the "
                             f"one to score on as {type(self).__name__}(heldout=loader)")
        return heldout[0] if isinstance(heldout, (list, tuple)) else heldout

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trained = False  # until on_train_start
        if not self.takes_outer_steps:
            return
        streams = _STREAMS.setdefault(trainer, {})
        key = "val" if self.heldout is None else id(self.heldout)
        if key not in streams:
            streams[key] = HeldOutStream(self.heldout_loader(trainer),
                                         consumed=self._heldout_consumed,
                                         rank=trainer.global_rank,
                                         world_size=trainer.world_size)
        self._stream = streams[key]

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """End the search of a fit resumed from a checkpoint of its last epoch (one saved
        before a search that did not finish): Lightning has no training left to run, and
        skips ``on_train_start`` and ``on_train_end`` with it."""
        if self._trained or trainer.ckpt_path is None or not trainer.fit_loop.done or \
                self.result is not None:
            return
        device = pl_module.device  # Lightning's teardown has moved the module to the CPU
        pl_module.to(trainer.strategy.root_device)
        self.on_train_start(trainer, pl_module)
        self.on_train_end(trainer, pl_module)
        pl_module.to(device)
        for logger in trainer.loggers:  # finalized already: write what the search logged
            logger.save()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trained = True
        self._train_started = time.perf_counter()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._train_started

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        _STREAMS.pop(trainer, None)  # the next fit of this trainer opens fresh streams

    def outer_step(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                   batch_idx: int, images: torch.Tensor,
                   take_step: Callable[[OuterStep], None],
                   replace: Callable[[torch.Tensor], Any] | None = None) -> None:
        """Run ``take_step`` on this training step's :class:`~nas_aug.bilevel.OuterStep`:
        ``images`` are the batch's inputs, ``replace(images)`` gives the batch with other
        inputs in their place. A batch the user's step skips skips the outer step."""
        seed = self.seed * 1_000_003 + trainer.global_step
        stream, step_index = self._stream, trainer.global_step

        def heldout_loss() -> torch.Tensor:
            return seeded_user_loss(trainer, pl_module, stream.batch_at(step_index, trainer),
                                    batch_idx, seed, self.loss)

        def train_loss(new_images: torch.Tensor | None = None) -> torch.Tensor:
            data = batch if new_images is None else replace(new_images)
            return seeded_user_loss(trainer, pl_module, data, batch_idx, seed, self.loss)

        step = OuterStep(images, train_loss, heldout_loss,
                         weights=[p for p in pl_module.parameters() if p.requires_grad],
                         lr=self.unroll_lr or trainer.optimizers[0].param_groups[0]["lr"],
                         step=trainer.global_step, reduce=mean_over_processes(trainer))
        with preserved_buffers(pl_module), contextlib.suppress(SkippedBatch):
            take_step(step)
            self.outer_steps += 1

    def outer_state(self) -> dict[str, Any]:
        consumed = self._heldout_consumed if self._stream is None else self._stream.consumed
        return {"heldout_consumed": consumed, "train_seconds": self.train_seconds,
                "outer_steps": self.outer_steps}

    def load_outer_state(self, state: dict[str, Any]) -> None:
        self._heldout_consumed = state.get("heldout_consumed", 0)
        self.train_seconds = state.get("train_seconds", 0.0)
        self.outer_steps = state.get("outer_steps", 0)
