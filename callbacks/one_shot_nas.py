"""``OneShotNAS``: train a weight-sharing supernet inside the user's fit, then search it."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from ..accounting import EnergyMeter, SearchCost, co2_kg
from ..constraints import Budget, Cost, CostTable, get_counter
from ..elastic_models import ElasticSpec, elasticize
from ..export import check_export_dir, export_architecture
from ..rng import restore_rng, rng_state
from ..space import Sample, Space, ValueChoice, mixed, set_mixing
from ..strategies.bilevel import preserved_buffers
from ..strategies.evaluation import recalibrate_batch_norm, split_batch, top1_accuracy
from ..strategies.evolution import EvolutionSearch
from ..strategies.gradient import GRADIENT_METHODS, ArchitectureStep, GradientNAS, Mixture
from ..strategies.sampling import SAMPLINGS
from ..supernet import activate, canonical_sample, device_of, space_of
from ..validation import check_int, check_positive, closest_match
from ._outer_loop import (
    HeldOutStream,
    SkippedBatch,
    check_heldout_available,
    heldout_loader,
    mean_over_processes,
    seeded_user_loss,
    user_loss,
)

STRATEGIES = ("spos", *GRADIENT_METHODS)


def _find_supernet(pl_module: nn.Module) -> nn.Module:
    """The module built by ``create_space`` (or an NNI space converted by ``from_nni``) inside
    ``pl_module``, else ``pl_module`` itself."""
    for module in pl_module.modules():
        if hasattr(module, "space_name") or hasattr(module, "nni_labels"):
            return module
    return pl_module


class OneShotNAS(Callback):
    """One-shot NAS as a callback, inside the user's fit, with one of these strategies:

    * ``"spos"`` (default): each training step trains one sampled path of the supernet; when
      training ends, an evolutionary search scores sub-networks on the held-out data (batch
      norm recalibrated for each), keeps those within ``budget``, leaves the winner active in
      the model and exports it;
    * ``"darts"`` / ``"gdas"`` / ``"proxyless"``: the architecture parameters are outer
      variables trained on
      held-out batches between the user's weight steps (see
      :class:`~nas_aug.strategies.gradient.GradientNAS`, whose options ``**strategy_options``
      are: ``lr``, ``weight_decay``, ``order``, ``beta_decay``, ``temperature``,
      ``cost_weight``, ``cost_form``, ``cost_exponent``); the weights train under the mixed
      forward. When training ends the
      most probable architecture within ``budget`` is derived, the ``top_k`` most probable
      are scored on the held-out data, and the derived one is left active and exported.

    With ``elastic`` (an :class:`~nas_aug.ElasticSpec`), a plain model (timm's MobileNetV3 /
    EfficientNet / ResNet families) inside the LightningModule is turned into a supernet in
    ``setup`` (:func:`~nas_aug.elasticize`), its largest sub-network the model itself with its
    weights: a warm start. A model written with NNI 3.0's mutable modules is converted in
    ``setup`` too (:func:`nas_aug.nni.from_nni`, with the ``nas_aug[nni]`` extra).

    The held-out data is the fit's validation data unless ``heldout`` (a dataloader) is given.
    Candidates are scored by top-1 accuracy of ``pl_module(inputs)``; batches are ``(x, y)``
    tuples or dicts (``input_key`` / ``target_key``). While fitting, validation runs the
    largest path, its batch-norm statistics recalibrated on the epoch's first training batches.

    >>> from nas_aug import Budget
    >>> callback = OneShotNAS(budget=Budget(macs=1_000_000), export_dir="out", generations=4)
    >>> callback.sampling_name
    'uniform'
    >>> OneShotNAS(strategy="darts", budget=Budget(macs=1_000_000), lr=1e-3).strategy
    'darts'
    """

    def __init__(self, budget: Budget | None = None, export_dir: str | Path | None = None,
                 strategy: str = "spos", sampling: str = "uniform", sandwich_random: int = 1,
                 population_size: int = 16, generations: int = 8, mutation_prob: float = 0.1,
                 calibration_batches: int = 8, heldout: Any = None, input_key: str = "image",
                 target_key: str = "label", counter: str = "fvcore",
                 input_shape: tuple[int, ...] | None = None, seed: int = 0, top_k: int = 5,
                 unroll_lr: float | None = None, elastic: ElasticSpec | None = None,
                 overwrite: bool = False, progress: bool = True, **strategy_options: Any):
        if strategy not in STRATEGIES:
            hint = closest_match(strategy, STRATEGIES) if isinstance(strategy, str) else ""
            raise ValueError(f"unknown strategy {strategy!r}{hint}; choose one of "
                             f"{list(STRATEGIES)}")
        accepted = set(inspect.signature(GradientNAS).parameters) - {"space", "method", "seed"}
        if strategy == "spos" and strategy_options:
            raise ValueError(f"options {sorted(strategy_options)} belong to the gradient "
                             f"strategies {list(GRADIENT_METHODS)}, not to strategy='spos'")
        unknown = sorted(set(strategy_options) - accepted)
        if unknown:
            raise ValueError(f"OneShotNAS(strategy={strategy!r}) got unknown option(s) "
                             f"{unknown}; its options are {sorted(accepted)}")
        if strategy != "spos" and sampling != "uniform":
            raise ValueError(f"sampling={sampling!r} is how strategy='spos' picks paths; "
                             f"strategy={strategy!r} picks them from its own parameters")
        if unroll_lr is not None:
            check_positive("unroll_lr", unroll_lr,
                           hint=" or None (the learning rate of the fit's first optimizer)")
        # validates the option values now, on a one-label stand-in for the supernet's space
        GradientNAS(Space([ValueChoice("check", [0, 1])]), GRADIENT_METHODS[0], **strategy_options)
        if elastic is not None and not isinstance(elastic, ElasticSpec):
            raise ValueError(f"elastic must be a nas_aug.ElasticSpec or None, got {elastic!r}")
        if budget is not None and not isinstance(budget, Budget):
            raise ValueError(f"budget must be a nas_aug.Budget or None, got {budget!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; choose one of {sorted(SAMPLINGS)}")
        if input_shape is not None and len(input_shape) != 3:
            raise ValueError(f"input_shape={input_shape!r} must be (channels, height, width), "
                             "without the batch dimension")
        check_int("calibration_batches", calibration_batches, 1)
        self.strategy, self.strategy_options = strategy, strategy_options
        self.elastic = elastic
        self.sampling_name = sampling
        self._sampling = SAMPLINGS[sampling](sandwich_random)
        self._counter = get_counter(counter)
        self._search_kwargs = dict(population_size=population_size, generations=generations,
                                   mutation_prob=mutation_prob, seed=seed)
        EvolutionSearch(Space([]), **self._search_kwargs)  # validates the search arguments now
        self.budget = budget
        self.export_dir = None if export_dir is None else Path(export_dir)
        self.calibration_batches = calibration_batches
        self.heldout = heldout
        self.input_key, self.target_key = input_key, target_key
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.overwrite, self.progress, self.seed = overwrite, progress, seed
        self.top_k, self.unroll_lr = check_int("top_k", top_k, 1), unroll_lr
        self.gradient: GradientNAS | None = None  # the architecture parameters (darts, gdas)
        self._stream: HeldOutStream | None = None
        self._heldout_consumed = 0
        self.rng = random.Random(seed)
        self.cost_table: CostTable | None = None
        self.result: dict[str, Any] | None = None
        self.search_state: dict[str, Any] | None = None  # the evolution's population and scores
        self.train_seconds = 0.0  # supernet training time, summed over resumed fits
        self._supernet: nn.Module | None = None
        self._extra_paths: tuple[Any, int, list[Sample]] | None = None
        self._recent_inputs: list[torch.Tensor] = []  # this epoch's first training inputs

    @property
    def state_key(self) -> str:
        return self._generate_state_key(strategy=self.strategy, sampling=self.sampling_name,
                                        seed=self.seed)

    # ---- Trainer hooks ----------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        if "nni" in sys.modules:  # a model written with NNI 3.0's mutable modules
            from ..nni import from_nni, holds_nni

            if holds_nni(pl_module):
                from_nni(pl_module)
                rank_zero_info("OneShotNAS: converted the NNI space inside "
                               f"{type(pl_module).__name__} to nas_aug choice modules")
        self._supernet = _find_supernet(pl_module)
        if self.elastic is not None and not space_of(self._supernet).labels:
            # before the optimizer is built and before a checkpoint loads into the supernet
            rank_zero_info(f"OneShotNAS: {elasticize(self._supernet, self.elastic)}")
        self.space = space_of(self._supernet)
        if not self.space.labels:
            raise ValueError(
                f"OneShotNAS found no choice modules in {type(pl_module).__name__}: put a "
                "supernet from nas_aug.search_spaces.create_space(...) (or a model built from "
                "nas_aug.space choice modules) inside your LightningModule")
        if self.export_dir is not None:
            check_export_dir(self.export_dir, self.overwrite)
        check_heldout_available(trainer, self.heldout, "OneShotNAS")
        if trainer.world_size > 1 and self.sampling_name == "sandwich":
            raise ValueError(
                f"sampling='sandwich' runs extra backward passes that a multi-process fit "
                f"(world_size={trainer.world_size}) would synchronise each time; use "
                "sampling='uniform' or devices=1")
        if self.strategy == "gdas" and not (trainer.max_epochs or 0) > 0:
            raise ValueError(f"strategy='gdas' anneals its temperature over the fit's epochs "
                             f"and needs Trainer(max_epochs=...), got {trainer.max_epochs!r}")
        if self.sampling_name == "sandwich" and not pl_module.automatic_optimization:
            raise ValueError("sampling='sandwich' adds the gradients of extra paths before the "
                             "optimizer step, which needs automatic optimization; use "
                             "sampling='uniform' with manual optimization")
        self.cost_table = None
        if self.strategy != "spos":
            self.gradient = GradientNAS(self.space, self.strategy, seed=self.seed,
                                        **self.strategy_options)
        shape = self.input_shape or getattr(self._supernet, "default_input_shape", None)
        if shape is not None:
            self._build_cost_table(tuple(shape))
            self._check_mixable(torch.zeros(2, *shape))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.cost_table is not None and self._needs_latency:
            self._measure_latency(pl_module.device)  # on the device the fit runs on
        if self.gradient is None:
            return
        self.gradient.setup(pl_module.device)
        self._stream = HeldOutStream(heldout_loader(trainer, self.heldout, "OneShotNAS"),
                                     consumed=self._heldout_consumed,
                                     rank=trainer.global_rank, world_size=trainer.world_size)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.gradient is not None:
            self.gradient.set_epoch(trainer.current_epoch, trainer.max_epochs)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.gradient is None:
            return
        metrics = {f"nas/{key}": value for key, value in self.gradient.metrics().items()}
        for label, probabilities in self.gradient.alpha.summary().items():
            metrics.update({f"nas/p/{label}={value}": p for value, p in probabilities.items()})
        pl_module.log_dict(metrics, on_epoch=True)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        x, _ = split_batch(batch, self.input_key, self.target_key)
        if batch_idx == 0:
            self._recent_inputs = []
        if batch_idx == 0 or self.cost_table is None:
            if self.cost_table is None:
                self._build_cost_table(tuple(x.shape[1:]), x.device)
            elif tuple(x.shape[1:]) != self.cost_table.input_shape:
                raise ValueError(
                    f"training inputs have shape {tuple(x.shape[1:])} but MACs are counted for "
                    f"{self.cost_table.input_shape} (the space's default_input_shape); pass "
                    f"OneShotNAS(input_shape={tuple(x.shape[1:])}) or build the space for it")
        if len(self._recent_inputs) < self.calibration_batches:
            self._recent_inputs.append(x.detach())
        if self.gradient is not None:
            self._architecture_step(trainer, pl_module, batch, batch_idx, x)
            return
        first, *extra = self._sampling.paths(self.space, self.rng)
        activate(self._supernet, first, self.space)
        self._extra_paths = (batch, batch_idx, extra) if extra else None

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Sandwich rule: the other paths of this step add their gradients before the step."""
        if self._extra_paths is None:
            return
        batch, batch_idx, extra = self._extra_paths
        self._extra_paths = None
        precision = trainer.precision_plugin
        for sample in extra:
            activate(self._supernet, sample, self.space)
            loss = user_loss(trainer, pl_module, batch, batch_idx)
            if loss is None:  # the user skipped this batch
                continue
            loss = precision.pre_backward(loss / trainer.accumulate_grad_batches, pl_module)
            precision.backward(loss, pl_module, None)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """While fitting, validate the largest path (SPOS) or the arg-max architecture
        (gradient strategies) with batch-norm statistics of its own (recalibrated on this
        epoch's first training batches; training itself uses batch statistics, so this
        changes no weight)."""
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if self.gradient is not None:  # the architecture derived so far, as a plain path
            set_mixing(self._supernet, None)
            activate(self._supernet, self.gradient.alpha.argmax(), self.space)
        else:
            activate(self._supernet, self.space.largest(), self.space)
        if self._recent_inputs:
            with trainer.precision_plugin.forward_context():
                recalibrate_batch_norm(self._supernet, pl_module, self._recent_inputs)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._meter = EnergyMeter(pl_module.device, trainer.num_devices)
        self._meter.start()
        self._train_started = time.perf_counter()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.train_seconds += time.perf_counter() - self._train_started
        started = time.perf_counter()
        if self.gradient is not None:
            set_mixing(self._supernet, None)
            self.result = self._derive(trainer, pl_module)
        else:
            self.result = self._search(trainer, pl_module)
        if trainer.world_size > 1:  # scores differ by rank (batch norm is recalibrated on each
            # rank's own shard): every rank takes rank 0's result
            self.result = trainer.strategy.broadcast(self.result, src=0)
            activate(self._supernet, self.result["sample"], self.space)
        energy, method = self._meter.stop()
        self.result["cost"] = SearchCost(
            train_seconds=self.train_seconds, search_seconds=time.perf_counter() - started,
            devices=trainer.num_devices, device=str(pl_module.device), energy_kwh=energy,
            co2_kg=co2_kg(energy), method=method).to_json()
        sample = self.result["sample"]
        if trainer.logger is not None:
            trainer.logger.log_metrics({"nas/best_score": self.result["score"],
                                        "nas/best_macs": self.result["macs"],
                                        "nas/best_params": self.result["params"]},
                                       step=trainer.global_step)
        rank_zero_info(f"OneShotNAS: best held-out top-1 {self.result['score']:.4f} at "
                       f"{self.cost_table(sample)}: {sample}")
        if self.export_dir is not None and trainer.is_global_zero:
            export_architecture(
                self.export_dir, self._supernet, sample, self.cost_table.input_shape,
                self.cost_table(sample), self.result["score"],
                budget=None if self.budget is None else dataclasses.asdict(self.budget),
                top=self.result["top"], candidates=self.result["candidates"],
                search_cost=self.result["cost"], strategy=self.strategy,
                probabilities=self.result.get("probabilities"), note=self.result.get("note"))

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"rng": rng_state(self.rng), "result": self.result,
                 "search": self.search_state, "train_seconds": self.train_seconds}
        if self.gradient is not None:
            state["gradient"] = self.gradient.state_dict()
            state["heldout_consumed"] = self._stream.consumed if self._stream else \
                self._heldout_consumed
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rng = restore_rng(state_dict["rng"])
        self.result = state_dict["result"]
        self.search_state = state_dict.get("search")
        self.train_seconds = state_dict.get("train_seconds", 0.0)
        if state_dict.get("gradient") is not None:  # setup built the strategy's parameters
            self.gradient.load_state_dict(state_dict["gradient"])
        self._heldout_consumed = state_dict.get("heldout_consumed", 0)

    # ---- internals ------------------------------------------------------------------------
    def _check_mixable(self, example: torch.Tensor) -> None:
        """Gradient strategies: fail now if a label cannot be mixed (the probe runs on a copy)."""
        if self.gradient is not None:
            set_mixing(self._supernet, self.gradient.train_mixing().weights, self.space,
                       example_input=example.to(device_of(self._supernet)))
            set_mixing(self._supernet, None)

    def _architecture_step(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                           batch_idx: int, x: torch.Tensor) -> None:
        """One outer step on the architecture parameters, then the mixing for the user's step."""
        if trainer.global_step == 0 and not hasattr(self._supernet, "_mixing_plan"):
            self._check_mixable(x[:2])
        heldout: list[Any] = []
        seed = self.seed * 1_000_003 + trainer.global_step

        def loss(mixture: Mixture, data: Any) -> torch.Tensor:
            with mixed(self._supernet, mixture.weights, self.space, support=mixture.support):
                return seeded_user_loss(trainer, pl_module, data, batch_idx, seed)

        def heldout_loss(mixture: Mixture) -> torch.Tensor:
            if not heldout:  # one held-out batch per step, fetched when first needed
                heldout.append(self._stream.next(trainer))
            return loss(mixture, heldout[0])

        table, budget = self.cost_table, self.budget
        limits = (None, None, None) if budget is None else (budget.macs, budget.params,
                                                             budget.latency_ms)
        step = ArchitectureStep(
            heldout_loss=heldout_loss, train_loss=lambda mixture: loss(mixture, batch),
            weights=[p for p in pl_module.parameters() if p.requires_grad],
            lr=self.unroll_lr or trainer.optimizers[0].param_groups[0]["lr"],
            expected_cost=lambda p: (*table.expected(p), table.expected_latency(p)
                                     if table.has_latency else None),
            limits=limits,
            reduce=mean_over_processes(trainer))
        with preserved_buffers(pl_module), contextlib.suppress(SkippedBatch):
            self.gradient.outer_step(step)
        mixture = self.gradient.train_mixing()
        set_mixing(self._supernet, mixture.weights, self.space, support=mixture.support)

    @property
    def _needs_latency(self) -> bool:
        return self.budget is not None and self.budget.latency_ms is not None

    def _build_cost_table(self, input_shape: tuple[int, ...],
                          device: torch.device | None = None) -> None:
        """The cost table, and the budget checked against it; a latency budget needs the
        latency measured on the fit's ``device``, which ``on_fit_start`` supplies (the model
        is not on it during ``setup``)."""
        self.cost_table = CostTable.build(self._supernet, input_shape, self._counter,
                                          progress=self.progress)
        if not self._needs_latency:
            self._check_budget()
        elif device is not None:
            self._measure_latency(device)

    def _measure_latency(self, device: torch.device) -> None:
        self.cost_table.measure_latency(self._supernet, device, progress=self.progress)
        rank_zero_info(f"OneShotNAS: latency table on {device}: "
                       + "; ".join(f"{c['sample']} {c['table_ms']:.3g} ms as a sum of units, "
                                   f"{c['measured_ms']:.3g} ms whole"
                                   for c in self.cost_table.latency_check))
        self._check_budget()

    def _check_budget(self) -> None:
        input_shape = self.cost_table.input_shape
        smallest = self.cost_table(self.space.smallest())
        if self.budget is not None and not self.budget.allows(smallest):
            raise ValueError(
                f"{self.budget} is below the smallest sub-network of this space ({smallest} for "
                f"inputs of shape {input_shape}); raise the budget to at least that")
        if self.strategy != "spos":
            return
        try:  # draw the first generation now (look-ups only), so a tight budget fails early
            self._new_search().ask()
        except ValueError as err:
            raise ValueError(f"{self.budget} admits too few architectures for the search "
                             f"(the smallest costs {smallest}): {err}") from None

    def _new_search(self) -> EvolutionSearch:
        table, supernet = self.cost_table, self._supernet
        feasible = None if self.budget is None else (lambda s: self.budget.allows(table(s)))
        return EvolutionSearch(self.space, constraint=feasible, **self._search_kwargs,
                               canonical=lambda s: canonical_sample(supernet, s, self.space))

    def _batches(self, loader: Any, trainer: Trainer, limit: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for i, batch in enumerate(loader):
            if limit is not None and i >= limit:
                return
            batch = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))
            yield split_batch(batch, self.input_key, self.target_key)

    def _scorer(self, trainer: Trainer, pl_module: LightningModule
                ) -> Callable[[Sample], float]:
        """Held-out top-1 of a sample, its batch norm recalibrated; the sample stays active."""
        heldout = heldout_loader(trainer, self.heldout, "OneShotNAS")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            calibration = [x for x, _ in self._batches(trainer.train_dataloader, trainer,
                                                       self.calibration_batches)]
        supernet = self._supernet

        def evaluate(sample: Sample) -> float:
            activate(supernet, sample, self.space)
            with trainer.precision_plugin.forward_context():
                recalibrate_batch_norm(supernet, pl_module, calibration)
                pl_module.eval()
                trainer.validating = True  # batch hooks see held-out data as validation data
                try:
                    return top1_accuracy(pl_module, self._batches(heldout, trainer))
                finally:
                    trainer.training = True

        return evaluate

    def _search(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        evaluate, table = self._scorer(trainer, pl_module), self.cost_table
        was_training = pl_module.training
        started, candidates = time.perf_counter(), []

        def evaluate_and_record(sample: Sample) -> float:
            score, cost = evaluate(sample), table(sample)
            candidates.append({"score": score, **_cost_fields(cost),
                               "seconds": time.perf_counter() - started, "sample": sample})
            self._meter.sample()
            return score

        search = self._new_search()
        search.run(evaluate_and_record, progress=self.progress and trainer.is_global_zero)
        self.search_state = search.state_dict()
        # best score first; among equal scores (common on small held-out sets) the cheapest
        ranked = sorted(search.history, key=lambda pair: (-pair[1], table(pair[0]).macs,
                                                          table(pair[0]).params))
        sample, score = ranked[0]
        evaluate(sample)  # leave the winner active, with its own batch-norm statistics
        pl_module.train(was_training)
        top = [{"sample": s, "score": v, **_cost_fields(table(s))} for s, v in ranked[:5]]
        return {"sample": sample, "score": score, **_cost_fields(table(sample)), "top": top,
                "candidates": candidates}

    def _derive(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Gradient strategies: the most probable architecture within the budget; the
        ``top_k`` most probable are scored on the held-out data for the record."""
        alpha, table, budget = self.gradient.alpha, self.cost_table, self.budget
        ranked = alpha.top_k(self.top_k, None if budget is None else
                             (lambda s: budget.allows(table(s))))
        if not ranked:
            raise RuntimeError(f"none of the most probable architectures is within {budget}; "
                               "raise cost_weight to pull the search under the budget")
        evaluate, was_training = self._scorer(trainer, pl_module), pl_module.training
        started, top = time.perf_counter(), []
        for sample, log_p in reversed(ranked):  # the most probable last: it stays active
            cost = table(sample)
            top.append({"sample": sample, "probability": math.exp(log_p),
                        "score": evaluate(sample), **_cost_fields(cost),
                        "seconds": time.perf_counter() - started})
            self._meter.sample()
        pl_module.train(was_training)
        top.reverse()
        best, argmax = top[0], alpha.argmax()
        note = None
        if best["sample"] != argmax:
            note = (f"the arg-max architecture costs {table(argmax)}, over {budget}: exported "
                    f"the most probable one within the budget (probability "
                    f"{best['probability']:.3g})")
            rank_zero_warn(f"OneShotNAS: {note}")
        return {"sample": best["sample"], "score": best["score"],
                **_cost_fields(table(best["sample"])), "top": top, "candidates": top,
                "probabilities": alpha.summary(), "argmax": argmax, "note": note}


def _cost_fields(cost: Cost) -> dict[str, Any]:
    """A cost as result fields: MACs, parameters, and the latency where it was measured."""
    fields = {"macs": cost.macs, "params": cost.params}
    if cost.latency_ms is not None:
        fields["latency_ms"] = cost.latency_ms
    return fields
