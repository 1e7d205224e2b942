"""``AugmentSearch``: search the augmentation policy inside the user's fit, on the fit's device."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from ..augment.apply import check_images
from ..augment.export import POLICY_FILE, save_policy
from ..augment.search import METHODS, PolicySearch
from ..io import write_json
from ._lightning import batch_transfer_owner
from ._outer_loop import OuterLoop

SEARCH_FILE = "augment_search.json"
HISTORY_PLOT_FILE = "policy_history.png"  # a differentiable policy's per-op values per epoch


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


class AugmentSearch(OuterLoop):
    """Search an augmentation policy while the user's fit trains the model, and export it.

    Training batches are augmented on the fit's device after transfer (the module's
    ``on_after_batch_transfer`` is wrapped for the fit and restored afterwards); validation and
    test batches never are. Batches are ``(images, targets, ...)`` tuples/lists or dicts
    (``image_key``), images float in ``[0, 1]``. At each training step the method takes one
    outer step with the user's own ``training_step`` loss on held-out batches (the fit's
    validation data unless ``heldout`` is given); the policy's parameters live here, never in
    the user's optimizer. ``method`` is ``"dada"`` or ``"randaugment"``; ``**options`` go to
    :class:`~nas_aug.augment.search.DadaSearch` / ``RandAugmentSearch``. When training ends the
    found policy is in ``result`` and, with ``export_dir``, in ``policy.json`` (DADA's
    per-op weights, probabilities and magnitudes over the epochs also in
    ``policy_history.png``). In a fit
    with ``OneShotNAS`` too, both take their held-out batch of a step from one stream.

    Args:
        method: a :class:`~nas_aug.augment.search.PolicySearch` (``DadaSearch(...)``,
            ``RandAugmentSearch(...)``) or the name of one, ``"dada"`` or ``"randaugment"``
            (:data:`nas_aug.augment.search.METHODS`; ``**options`` then go to it).
        export_dir: where ``policy.json`` and ``augment_search.json`` are written.
        heldout: the loader to score on (default: the fit's validation data).
        image_key: where dict batches hold their images.
        unroll_lr: the virtual step's learning rate (default: the fit's first optimizer's).
        seed: seeds the outer steps' randomness, and the draws of a method given by name.
        loss: ``loss(module, batch)``, the loss of the outer steps in place of the module's
            ``training_step`` (needed under manual optimization).
        overwrite: replace a policy already in ``export_dir``.
        **options: the method's options (see its class).

    Raises:
        ValueError: an unknown method or option, or a bad value; in ``setup``, a fit without
            held-out data, manual optimization without ``loss``, or ``randaugment`` without
            ``max_epochs``.
        RuntimeError: when training ends, if every outer step was skipped.
        FileExistsError: ``export_dir`` already holds a policy and ``overwrite`` is off.

    >>> callback = AugmentSearch(method="randaugment", num_ops=(1, 2), magnitudes=(0.3, 0.6))
    >>> callback.method.candidates
    [(1, 0.3), (1, 0.6), (2, 0.3), (2, 0.6), 'none', 'trivialaugment', 'crop_flip']
    """

    def __init__(self, method: str | PolicySearch = "dada", export_dir: str | Path | None = None,
                 heldout: Any = None, image_key: str = "image", unroll_lr: float | None = None,
                 seed: int = 0, overwrite: bool = False,
                 loss: Callable[[LightningModule, Any], torch.Tensor] | None = None,
                 **options: Any):
        if isinstance(method, PolicySearch):
            if options:
                raise ValueError(f"options {sorted(options)} go into the method object itself: "
                                 f"{type(method).__name__}({', '.join(options)}=...)")
        else:
            accepted = set(inspect.signature(METHODS.get(method)).parameters) - {"seed"}
            unknown = sorted(set(options) - accepted)
            if unknown:
                raise ValueError(f"AugmentSearch(method={method!r}) got unknown option(s) "
                                 f"{unknown}; its options are {sorted(accepted)}")
            method = METHODS.get(method)(seed=seed, **options)
        super().__init__(heldout=heldout, unroll_lr=unroll_lr, seed=seed, loss=loss)
        self.method, self.method_name = method, method.name
        self.export_dir = None if export_dir is None else Path(export_dir)
        self.image_key, self.overwrite = image_key, overwrite
        self.result: dict[str, Any] | None = None
        self._raw: tuple[torch.Tensor, Callable[[torch.Tensor], Any]] | None = None
        self._in_epoch = False
        self._hooked: tuple[Any, Any] | None = None  # (the hook's owner, our wrapper)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(method=self.method_name, seed=self.seed)

    # ---- Trainer hooks ----------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        self.check_fit(trainer, pl_module, f"method {self.method_name!r}")
        self.method.check_fit(trainer.max_epochs)
        if self.export_dir is not None and not self.overwrite and \
                (self.export_dir / POLICY_FILE).exists():
            raise FileExistsError(f"export directory {str(self.export_dir)!r} already holds a "
                                  f"policy ({self.export_dir / POLICY_FILE}); choose another "
                                  "directory or pass overwrite=True to replace it")
        owner = batch_transfer_owner(trainer, pl_module)
        original = owner.on_after_batch_transfer

        def on_after_batch_transfer(batch: Any, dataloader_idx: int) -> Any:
            batch = original(batch, dataloader_idx)
            if not (self._in_epoch and trainer.training) or on_after_batch_transfer.inert:
                return batch
            images, replace = _find_images(batch, self.image_key)
            check_images(images)
            self._raw = (images, replace)
            return replace(self.method.augment(images))

        # what it wraps, if it is another AugmentSearch's; inert once this one is torn down
        on_after_batch_transfer.previous = owner.__dict__.get("on_after_batch_transfer")
        on_after_batch_transfer.inert = False
        owner.on_after_batch_transfer = on_after_batch_transfer
        self._hooked = (owner, on_after_batch_transfer)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if self._hooked is None:
            return
        owner, wrapper = self._hooked
        self._hooked, wrapper.inert = None, True
        if owner.__dict__.get("on_after_batch_transfer") is not wrapper:
            return  # another AugmentSearch wraps ours: it unwraps both when it is torn down
        previous = wrapper.previous
        while previous is not None and previous.inert:
            previous = previous.previous
        if previous is None:
            del owner.on_after_batch_transfer
        else:
            owner.on_after_batch_transfer = previous

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.method.setup(pl_module.device)
        super().on_fit_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._in_epoch = True

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._raw is None:
            return
        images, replace = self._raw
        self._raw = None
        self.outer_step(trainer, pl_module, batch, batch_idx, images, self.method.outer_step,
                        replace=replace)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._in_epoch = False
        self.method.end_epoch(trainer.current_epoch, trainer.max_epochs)
        pl_module.log_dict({f"augment/{key}": value for key, value in
                            self.method.metrics().items()}, on_epoch=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.check_searched(f"method {self.method_name!r}")
        policy = self.method.best_policy()
        self.result = {"policy": policy.to_json(), "train_seconds": self.train_seconds,
                       "heldout_batches": self._stream.consumed, **self.method.summary()}
        rank_zero_info(f"AugmentSearch ({self.method_name}): policy {policy.name!r} with "
                       f"{len(policy.sub_policies)} sub-policies, {policy.draws_per_sample} "
                       "drawn per sample")
        if self.export_dir is not None and trainer.is_global_zero:
            self.export_dir.mkdir(parents=True, exist_ok=True)
            save_policy(policy, self.export_dir / POLICY_FILE)
            write_json(self.export_dir / SEARCH_FILE, self.result)
            if self.result.get("history"):
                from ..plots import plot_policy_history

                plot_policy_history(self.result["history"], self.result["ops"],
                                    self.export_dir / HISTORY_PLOT_FILE)

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict(), "result": self.result,
                **self.outer_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.method.load_state_dict(state_dict["method"])
        self.load_outer_state(state_dict)
        self.result = state_dict["result"]
