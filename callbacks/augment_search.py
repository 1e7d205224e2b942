"""``AugmentSearch``: search the augmentation policy inside the user's fit, on the fit's device."""

from __future__ import annotations

import contextlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden

from ..augment.apply import check_images
from ..augment.export import POLICY_FILE, save_policy
from ..augment.search import METHODS, OuterStep
from ..io import atomic_write
from ..strategies.bilevel import preserved_buffers
from ..validation import check_positive, closest_match
from ._outer_loop import (
    HeldOutStream,
    SkippedBatch,
    check_heldout_available,
    heldout_loader,
    mean_over_processes,
    seeded_user_loss,
)

SEARCH_FILE = "augment_search.json"


def _find_images(batch: Any, image_key: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """The batch's images and a function that gives the batch with other images in their place."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], lambda images: type(batch)([images, *batch[1:]])
    if isinstance(batch, dict) and isinstance(batch.get(image_key), torch.Tensor):
        return batch[image_key], lambda images: {**batch, image_key: images}
    if isinstance(batch, dict):
        raise ValueError(f"AugmentSearch looks for images under key {image_key!r}, but the batch "
                         f"dict has keys {sorted(batch)}; pass AugmentSearch(image_key=...)")
    found = type(batch).__name__ if not isinstance(batch, (tuple, list)) else \
        f"a {type(batch).__name__} of {[type(item).__name__ for item in batch]}"
    raise ValueError(f"AugmentSearch finds images in (images, targets, ...) tuples/lists or in "
                     f"dicts (image_key=...), but the training batch is {found}")


class AugmentSearch(Callback):
    """Search an augmentation policy while the user's fit trains the model, and export it.

    Training batches are augmented on the fit's device after transfer (the module's
    ``on_after_batch_transfer`` is wrapped for the fit and restored afterwards); validation and
    test batches never are. Batches are ``(images, targets, ...)`` tuples/lists or dicts
    (``image_key``), images float in ``[0, 1]``. At each training step the method takes one
    outer step with the user's own ``training_step`` loss on held-out batches (the fit's
    validation data unless ``heldout`` is given); the policy's parameters live here, never in
    the user's optimizer. ``method`` is ``"dada"`` or ``"randaugment"``; ``**options`` go to
    :class:`~nas_aug.augment.search.DadaSearch` / ``RandAugmentSearch``. When training ends the
    found policy is in ``result`` and, with ``export_dir``, in ``policy.json``.

    >>> callback = AugmentSearch(method="randaugment", num_ops=(1, 2), magnitudes=(0.3, 0.6))
    >>> callback.method.candidates
    [(1, 0.3), (1, 0.6), (2, 0.3), (2, 0.6)]
    """

    def __init__(self, method: str = "dada", export_dir: str | Path | None = None,
                 heldout: Any = None, image_key: str = "image", unroll_lr: float | None = None,
                 seed: int = 0, overwrite: bool = False, **options: Any):
        if method not in METHODS:
            hint = closest_match(method, METHODS) if isinstance(method, str) else ""
            raise ValueError(f"unknown augmentation search method {method!r}{hint}; choose one "
                             f"of {sorted(METHODS)}")
        accepted = set(inspect.signature(METHODS[method]).parameters) - {"seed"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(f"AugmentSearch(method={method!r}) got unknown option(s) {unknown}; "
                             f"its options are {sorted(accepted)}")
        if unroll_lr is not None:
            check_positive("unroll_lr", unroll_lr,
                           hint=" or None (the learning rate of the fit's first optimizer)")
        self.method_name = method
        self.method = METHODS[method](seed=seed, **options)
        self.export_dir = None if export_dir is None else Path(export_dir)
        self.heldout, self.image_key = heldout, image_key
        self.unroll_lr, self.seed, self.overwrite = unroll_lr, seed, overwrite
        self.result: dict[str, Any] | None = None
        self.train_seconds = 0.0
        self._heldout_consumed = 0
        self._stream: HeldOutStream | None = None
        self._raw: tuple[torch.Tensor, Callable[[torch.Tensor], Any]] | None = None
        self._in_epoch = False
        self._hooked: Any = None  # the module or datamodule whose transfer hook is wrapped

    @property
    def state_key(self) -> str:
        return self._generate_state_key(method=self.method_name, seed=self.seed)

    # ---- Trainer hooks ----------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        check_heldout_available(trainer, self.heldout, "AugmentSearch")
        if self.method_name == "randaugment" and not (trainer.max_epochs or 0) > 0:
            raise ValueError(f"method='randaugment' spreads its halvings over the fit's epochs "
                             f"and needs Trainer(max_epochs=...), got {trainer.max_epochs!r}")
        if self.export_dir is not None and not self.overwrite and \
                (self.export_dir / POLICY_FILE).exists():
            raise FileExistsError(f"export directory {str(self.export_dir)!r} already holds a "
                                  f"policy ({self.export_dir / POLICY_FILE}); choose another "
                                  "directory or pass overwrite=True to replace it")
        # Lightning runs the datamodule's hook when the datamodule overrides it, else the
        # module's; wrap that one (the datamodule's when neither overrides it, which keeps
        # Lightning from warning that the module overrides it)
        selector = trainer._data_connector._datahook_selector
        owner = pl_module if selector is None else selector.get_instance("on_after_batch_transfer")
        if owner is pl_module and trainer.datamodule is not None and \
                not is_overridden("on_after_batch_transfer", pl_module):
            owner = trainer.datamodule
        original = owner.on_after_batch_transfer

        def on_after_batch_transfer(batch: Any, dataloader_idx: int) -> Any:
            batch = original(batch, dataloader_idx)
            if not (self._in_epoch and trainer.training):
                return batch
            images, replace = _find_images(batch, self.image_key)
            check_images(images)
            self._raw = (images, replace)
            return replace(self.method.augment(images))

        owner.on_after_batch_transfer = on_after_batch_transfer
        self._hooked = owner

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._hooked is not None:
            del self._hooked.on_after_batch_transfer
            self._hooked = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.method.setup(pl_module.device)
        self._stream = HeldOutStream(heldout_loader(trainer, self.heldout, "AugmentSearch"),
                                     consumed=self._heldout_consumed,
                                     rank=trainer.global_rank, world_size=trainer.world_size)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._in_epoch = True

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._raw is None:
            return
        images, replace = self._raw
        self._raw = None
        heldout: list[Any] = []
        seed = self.seed * 1_000_003 + trainer.global_step

        def heldout_loss() -> torch.Tensor:
            if not heldout:  # one held-out batch per step, fetched when first needed
                heldout.append(self._stream.next(trainer))
            return seeded_user_loss(trainer, pl_module, heldout[0], batch_idx, seed)

        def train_loss(augmented: torch.Tensor) -> torch.Tensor:
            return seeded_user_loss(trainer, pl_module, replace(augmented), batch_idx, seed)

        weights = [p for p in pl_module.parameters() if p.requires_grad]
        lr = self.unroll_lr or trainer.optimizers[0].param_groups[0]["lr"]
        step = OuterStep(images, train_loss, heldout_loss, weights, lr, trainer.global_step,
                         reduce=mean_over_processes(trainer))
        with preserved_buffers(pl_module), contextlib.suppress(SkippedBatch):
            self.method.outer_step(step)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._in_epoch = False
        self.method.end_epoch(trainer.current_epoch, trainer.max_epochs)
        pl_module.log_dict({f"augment/{key}": value for key, value in
                            self.method.metrics().items()}, on_epoch=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._train_started
        policy = self.method.best_policy()
        self.result = {"policy": policy.to_json(), "train_seconds": self.train_seconds,
                       "heldout_batches": self._stream.consumed, **self.method.summary()}
        rank_zero_info(f"AugmentSearch ({self.method_name}): policy {policy.name!r} with "
                       f"{len(policy.sub_policies)} sub-policies, {policy.draws_per_sample} "
                       "drawn per sample")
        if self.export_dir is not None and trainer.is_global_zero:
            self.export_dir.mkdir(parents=True, exist_ok=True)
            save_policy(policy, self.export_dir / POLICY_FILE)
            text = json.dumps(self.result, indent=2) + "\n"
            atomic_write(self.export_dir / SEARCH_FILE, lambda tmp: tmp.write_text(text))

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        consumed = self._heldout_consumed if self._stream is None else self._stream.consumed
        return {"method": self.method.state_dict(), "heldout_consumed": consumed,
                "result": self.result, "train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.method.load_state_dict(state_dict["method"])
        self._heldout_consumed = state_dict["heldout_consumed"]
        self.result = state_dict["result"]
        self.train_seconds = state_dict["train_seconds"]
