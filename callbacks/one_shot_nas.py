"""``OneShotNAS``: train a weight-sharing supernet inside the user's fit, then search it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from ..accounting import EnergyMeter, SearchCost, co2_kg
from ..bilevel import preserved_buffers
from ..constraints import Budget, CostTable, check_budgets, get_counter
from ..export import check_export_dir, export_architecture
from ..io import write_json
from ..report import write_budget_table
from ..result import SearchResult
from ..space import Sample, Space
from ..space.choice import sample_key
from ..strategies import (
    Evolution,
    FitInfo,
    Scoring,
    SearchContext,
    Searcher,
    Strategy,
    get_searcher,
    get_strategy,
)
from ..strategies.evaluation import recalibrate_batch_norm, split_batch, top1_accuracy
from ..supernet import (
    activate,
    device_of,
    find_supernet,
    input_of,
    outputs_of,
    space_of,
    supernet_info,
)
from ..supernet.record import outermost
from ..validation import check_int
from ._lightning import as_validation, set_sampler_epoch
from ._outer_loop import (
    LossFunction,
    OuterLoop,
    SkippedBatch,
    seeded_user_loss,
    to_device,
    user_loss,
)

if TYPE_CHECKING:
    from ..elastic_models import ElasticSpec

SEARCH_STATE_FILE = "search_state.json"


def _holds_nni(module: nn.Module) -> bool:
    """Whether a model holds modules of NNI's (an NNI 3.0 space nas_aug can convert); read
    off the modules' classes, so nas_aug.nni (and NNI) load only for such a model."""
    return any(type(m).__module__.partition(".")[0] == "nni" for m in module.modules())


def _refuse_compiled(pl_module: LightningModule) -> None:
    """A compiled model recompiles for every sub-network a search runs: refuse it."""
    compiled = [name or "the module" for name, m in pl_module.named_modules()
                if isinstance(m, torch._dynamo.OptimizedModule)]
    if getattr(pl_module, "_compiler_ctx", None) is not None or compiled:
        where = f" ({', '.join(compiled)})" if compiled else ""
        raise ValueError(
            f"OneShotNAS cannot search a torch.compile'd model{where}: every sub-network it "
            "activates changes the forward's control flow and shapes, so the compiled graph is "
            "rebuilt for each (benchmarks/results/compile.md); fit the supernet uncompiled and "
            "compile the exported sub-network (torch.compile(build_subnet(export_dir)))")


def _logits(output: Any) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"in-place distillation reads the logits your module's forward "
                         f"returns, but it returned a {type(output).__name__}; return a "
                         "tensor of logits, or set distill_weight=0")
    return output


def _fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors (a module's weights and buffers: a saved search state belongs
    to them)."""
    digest = hashlib.sha256()
    for name, tensor in tensors.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class OneShotNAS(OuterLoop):
    """One-shot NAS as a callback, inside the user's fit, with a strategy object or the name
    of one (:data:`nas_aug.strategies.STRATEGIES`; ``**strategy_options`` then go to its
    constructor):

    * :class:`~nas_aug.strategies.SPOS` (``"spos"``, default): each training step trains
      sampled paths of the supernet; when training ends, the outer searcher (``search``)
      scores sub-networks on the held-out data (batch norm recalibrated for each), keeps those
      within ``budget``, leaves the winner active in the model and exports it;
    * :class:`~nas_aug.strategies.DARTS` / :class:`~nas_aug.strategies.GDAS` /
      :class:`~nas_aug.strategies.ProxylessNAS`: the architecture parameters are outer
      variables trained on held-out batches between the user's weight steps; the weights
      train under the mixed forward. When training ends the most probable architecture
      within ``budget`` is derived, the ``top_k`` most probable are scored on the held-out
      data, and the derived one is left active and exported.

    While fitting, validation runs the strategy's current pick (SPOS: the largest path) with
    its batch-norm statistics recalibrated on the epoch's first training batches. A search
    killed while it scores sub-networks continues from ``search_state.json`` in
    ``export_dir`` when the fit is run again from its last checkpoint.

    Every logger of the Trainer receives, per epoch, the strategy's metrics under ``nas/``
    (SPOS: ``sampled_macs_mean`` of the paths it trained; gradient strategies: entropies,
    probabilities and outer losses; GDAS also its ``temperature``), ``nas/val_top1`` and
    ``nas/val_macs`` of the path validated (where the module's forward returns logits), and
    when the search ends ``nas/best_score``, ``nas/best_macs`` and ``nas/best_params`` of the
    chosen architecture.

    Args:
        budget: the :class:`~nas_aug.Budget` every result must meet (``None``: unbounded).
        budgets: several increasing budgets instead (searchers' strategies only): the trained
            supernet is searched once per budget, reusing every held-out score, and each
            winner is exported to ``export_dir/budget_<i>`` with one table, ``budgets.md``;
            ``results`` holds one result per budget, ``result`` the last (left active).
        export_dir: where the export is written when the search ends (``None``: nowhere).
        strategy: a :class:`~nas_aug.strategies.Strategy` or a registered name.
        search: the outer searcher (a :class:`~nas_aug.strategies.Searcher` or a registered
            name; default :class:`~nas_aug.strategies.Evolution`) of strategies that search
            the trained supernet.
        calibration_batches: training batches that recalibrate batch norm per candidate.
        heldout: the loader to score on (default: the fit's validation data).
        input_key, target_key: where dict batches hold inputs and targets.
        counter: the MAC counter (``"fvcore"`` or ``"torch"``).
        input_shape: ``(channels, height, width)`` to count costs for (default: the space's,
            else the first training batch's).
        seed: seeds the strategy's and the searcher's randomness.
        top_k: how many candidates the result's ``top`` holds.
        unroll_lr: the virtual step's learning rate (default: the fit's first optimizer's).
        elastic: an :class:`~nas_aug.ElasticSpec` to turn a plain timm model into a supernet
            in ``setup`` (its largest sub-network the model itself, with its weights).
        overwrite: replace an export already in ``export_dir``.
        progress: show progress bars for the cost table and the search.
        supernet: the supernet to search, by attribute name (``"student"``) or as the
            module, where the LightningModule holds several (default: the one it holds).
        loss: ``loss(module, batch)``, the loss of outer steps, sandwich paths and attentive
            candidates in place of the module's ``training_step`` (needed under manual
            optimization).
        population_size, generations, mutation_prob: shorthand for
            ``search=Evolution(population_size=..., generations=..., mutation_prob=...)``.
        **strategy_options: the options of the strategy named by ``strategy``.

    Raises:
        ValueError: an unknown strategy, searcher, option or counter, or a bad value; in
            ``setup``, a model without choice modules or with several supernets and no
            ``supernet``, a torch.compile'd model, a fit without held-out data, a fit the
            strategy cannot run in (manual optimization without ``loss``), or a budget no
            architecture meets.
        RuntimeError: when training ends, if every outer step of the strategy was skipped.

    >>> from nas_aug import Budget
    >>> from nas_aug.strategies import DARTS, Evolution
    >>> OneShotNAS(budget=Budget(macs=1_000_000), search=Evolution(generations=4)).strategy
    SPOS(sampling='uniform', sandwich_random=1, distill_weight=0.0, distill_temperature=1.0)
    >>> OneShotNAS(strategy=DARTS(lr=3e-3), budget=Budget(macs=1_000_000)).strategy.name
    'darts'
    >>> OneShotNAS(strategy="darts", lr=1e-3).strategy.lr
    0.001
    """

    def __init__(self, budget: Budget | None = None, export_dir: str | Path | None = None,
                 strategy: str | Strategy = "spos", search: str | Searcher | None = None,
                 calibration_batches: int = 8, heldout: Any = None, input_key: str = "image",
                 target_key: str = "label", counter: str = "fvcore",
                 input_shape: tuple[int, ...] | None = None, seed: int = 0, top_k: int = 5,
                 unroll_lr: float | None = None, elastic: ElasticSpec | None = None,
                 overwrite: bool = False, progress: bool = True,
                 supernet: str | nn.Module | None = None, loss: LossFunction | None = None,
                 budgets: Sequence[Budget] | None = None,
                 population_size: int | None = None, generations: int | None = None,
                 mutation_prob: float | None = None, **strategy_options: Any):
        super().__init__(heldout=heldout, unroll_lr=unroll_lr, seed=seed, loss=loss)
        if supernet is not None and not isinstance(supernet, (str, nn.Module)):
            raise ValueError(f"supernet must be the name of a submodule, a module or None, "
                             f"got {supernet!r}")
        self.supernet = supernet
        self.strategy = get_strategy(strategy, inspect.signature(OneShotNAS).parameters,
                                     **strategy_options)
        evolution = {key: value for key, value in (("population_size", population_size),
                     ("generations", generations), ("mutation_prob", mutation_prob))
                     if value is not None}
        if evolution and search is not None:
            raise ValueError(f"{sorted(evolution)} are shorthand for search=Evolution(...); "
                             "give them to the searcher you pass as search=")
        if (search is not None or evolution) and not self.strategy.uses_searcher:
            raise ValueError(f"strategy {self.strategy.name!r} derives its architecture from "
                             "its own parameters and runs no outer searcher: drop search= "
                             f"({sorted(evolution) or search!r})")
        self.search = Evolution(**evolution) if search is None else get_searcher(search)
        if elastic is not None:
            from ..elastic_models import ElasticSpec  # timm's integration, imported for this

            if not isinstance(elastic, ElasticSpec):
                raise ValueError(f"elastic must be a nas_aug.ElasticSpec or None, got "
                                 f"{elastic!r}")
        if budget is not None and not isinstance(budget, Budget):
            raise ValueError(f"budget must be a nas_aug.Budget or None, got {budget!r}")
        if input_shape is not None and len(input_shape) != 3:
            raise ValueError(f"input_shape={input_shape!r} must be (channels, height, width), "
                             "without the batch dimension")
        self.calibration_batches = check_int("calibration_batches", calibration_batches, 1)
        self.strategy.seed(check_int("seed", seed, 0))
        self.budgets = None
        if budgets is not None:
            if budget is not None:
                raise ValueError("pass one budget= or several budgets=, not both")
            self.budgets = check_budgets(budgets)
            if not self.strategy.uses_searcher:
                raise ValueError(f"budgets= searches the trained supernet once per budget, but "
                                 f"strategy {self.strategy.name!r} trains towards one budget: "
                                 "pass budget= or use a searching strategy (strategy='spos')")
            budget = self.budgets[0]  # the tightest: checked against the space in setup
        self.elastic, self.budget = elastic, budget
        self._counter = get_counter(counter)
        self.export_dir = None if export_dir is None else Path(export_dir)
        self.input_key, self.target_key = input_key, target_key
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.overwrite, self.progress = overwrite, progress
        self.top_k = check_int("top_k", top_k, 1)
        self.result: SearchResult | None = None
        self.results: list[SearchResult] = []
        self._context: SearchContext | None = None
        self._extra_paths: tuple[Any, int, list[Sample]] | None = None
        self._recent_inputs: list[torch.Tensor] = []  # this epoch's first training inputs
        self._calibration: list[torch.Tensor] = []  # the search's batch-norm inputs
        self._winner: tuple[str, list[torch.Tensor]] | None = None  # weights' hash, buffers
        self._loading_into_fit = True
        self._teacher, self._teacher_logits = contextlib.ExitStack(), []
        # while fitting, the module's outputs on validation batches, and the correct and the
        # total count of their top-1 predictions, for the path validated
        self._validating, self._validated_outputs = contextlib.ExitStack(), []
        self._validated_counts: torch.Tensor | None = None
        self._validated: Sample | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(strategy=repr(self.strategy), seed=self.seed)

    @property
    def takes_outer_steps(self) -> bool:
        return self.strategy.has_outer_step

    # ---- Trainer hooks ----------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        _refuse_compiled(pl_module)
        if _holds_nni(pl_module):  # a model written with NNI 3.0's mutable modules
            from ..nni import from_nni, holds_nni

            if holds_nni(pl_module):
                from_nni(pl_module)
                rank_zero_info("OneShotNAS: converted the NNI space inside "
                               f"{type(pl_module).__name__} to nas_aug choice modules")
        supernet = self._find_supernet(pl_module)
        if self.elastic is not None and not space_of(supernet).labels:
            # before the optimizer is built and before a checkpoint loads into the supernet
            from ..elastic_models import elasticize

            rank_zero_info(f"OneShotNAS: {elasticize(supernet, self.elastic)}")
        space = space_of(supernet)
        if not space.labels:
            raise ValueError(
                f"OneShotNAS found no choice modules in {type(pl_module).__name__}: put a "
                "supernet from nas_aug.search_spaces.create_space(...) (or a model built from "
                "nas_aug.space choice modules) inside your LightningModule")
        for index in range(len(self.budgets or (None,))):
            if self.export_dir is not None:
                check_export_dir(self._export_dir_of(index), self.overwrite)
        self.check_fit(trainer, pl_module, f"strategy {self.strategy.name!r}")
        self.strategy.check_fit(FitInfo(max_epochs=trainer.max_epochs,
                                        world_size=trainer.world_size,
                                        automatic_optimization=pl_module.automatic_optimization))
        self._context = SearchContext(supernet, space, self.budget, self.search, self.seed)
        self.strategy.setup(self._context)
        info = supernet_info(supernet)
        shape = self.input_shape or (None if info is None else info.input_shape)
        if shape is not None:
            self._build_cost_table(tuple(shape))
            self.strategy.prepare(torch.zeros(2, *shape, device=device_of(supernet)))

    @property
    def _supernet(self) -> nn.Module:
        return self._context.supernet

    @property
    def space(self) -> Space:
        """The supernet's space (from ``setup`` on)."""
        return self._context.space

    @property
    def cost_table(self) -> CostTable | None:
        """The cost table, once counted (in ``setup``, or on the fit's first batch)."""
        return None if self._context is None else self._context.cost_table

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.cost_table is not None and self._needs_latency:
            self._measure_latency(pl_module.device)  # on the device the fit runs on
        self.strategy.to(pl_module.device)
        super().on_fit_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.strategy.set_epoch(trainer.current_epoch, trainer.max_epochs)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = self.strategy.metrics()
        if metrics:
            pl_module.log_dict({f"nas/{key}": value for key, value in metrics.items()},
                               on_epoch=True)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        x, _ = split_batch(batch, self.input_key, self.target_key)
        if batch_idx == 0:
            self._recent_inputs = []
        if self.cost_table is None or batch_idx == 0:
            inner = input_of(pl_module, self._supernet, x[:2])  # after any wrapper layers
            inner = x[:2] if not isinstance(inner, torch.Tensor) else inner
            shape = tuple(inner.shape[1:])
        if self.cost_table is None:
            self._build_cost_table(shape, x.device)
            self.strategy.prepare(inner)
        elif batch_idx == 0 and shape != self.cost_table.input_shape:
            raise ValueError(
                f"the supernet receives inputs of shape {shape} but MACs are counted for "
                f"{self.cost_table.input_shape} (the space's input shape); pass "
                f"OneShotNAS(input_shape={shape}) or build the space for it")
        if len(self._recent_inputs) < self.calibration_batches:
            self._recent_inputs.append(x.detach())
        if self.strategy.has_outer_step:
            self.outer_step(trainer, pl_module, batch, batch_idx, x, self.strategy.outer_step)
        self.strategy.set_batch_loss(self._batch_loss(trainer, pl_module, batch, batch_idx))
        extra = self.strategy.train_paths()
        self._extra_paths = (batch, batch_idx, extra) if extra else None
        if extra and self.strategy.distills:  # the largest path's logits, from the user's step
            self._teacher = contextlib.ExitStack()
            self._teacher_logits = self._teacher.enter_context(outputs_of(pl_module))

    def _batch_loss(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                    batch_idx: int) -> Callable[[Sample], float | None]:
        """A path's loss on this training batch, for strategies that choose paths by it: the
        path activated, the user's loss without gradients, every path with the same
        randomness (the outer step's seed), the model's buffers (batch-norm statistics)
        restored; ``None`` where the user's step skips the batch."""
        seed = self.seed * 1_000_003 + trainer.global_step

        def loss(sample: Sample) -> float | None:
            activate(self._supernet, sample, self.space)
            with torch.no_grad(), preserved_buffers(pl_module), \
                    contextlib.suppress(SkippedBatch):
                return seeded_user_loss(trainer, pl_module, batch, batch_idx, seed,
                                        self.loss).item()
            return None

        return loss

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._teacher.close()  # also after a step the user skipped

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Sandwich rule: the other paths of this step add their gradients before the step
        (with in-place distillation, each also learns the largest path's soft predictions)."""
        if self._extra_paths is None:
            return
        batch, batch_idx, extra = self._extra_paths
        self._extra_paths = None
        self._teacher.close()
        teacher = None
        if self.strategy.distills:
            x = split_batch(batch, self.input_key, self.target_key)[0]
            with torch.no_grad(), trainer.precision_plugin.train_step_context():
                # the forward of the user's step, else one of our own
                teacher = _logits(self._teacher_logits[0] if self._teacher_logits
                                  else pl_module(x)).detach()
        precision = trainer.precision_plugin
        for sample in extra:
            activate(self._supernet, sample, self.space)
            with outputs_of(pl_module) as outputs:
                loss = user_loss(trainer, pl_module, batch, batch_idx, self.loss)
            if loss is None:  # the user skipped this batch
                continue
            if teacher is not None:
                with trainer.precision_plugin.train_step_context():
                    logits = _logits(outputs[0] if outputs else pl_module(x))
                loss = self.strategy.path_loss(loss, logits, teacher)
            loss = precision.pre_backward(loss / trainer.accumulate_grad_batches, pl_module)
            precision.backward(loss, pl_module, None)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """While fitting, validate the strategy's current pick with batch-norm statistics of
        its own (recalibrated on this epoch's first training batches; training itself uses
        batch statistics, so this changes no weight)."""
        if trainer.state.fn != TrainerFn.FITTING:
            self._restore_winner(trainer, pl_module)
            return
        self._validated = activate(self._supernet, self.strategy.validation_sample(), self.space)
        if self._recent_inputs:
            with trainer.precision_plugin.forward_context():
                recalibrate_batch_norm(self._supernet, pl_module, self._recent_inputs)
        self._validating.close()
        self._validated_counts = None
        self._validated_outputs = self._validating.enter_context(outputs_of(pl_module))

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        """Count the validated path's correct top-1 predictions: the module's first output
        on a batch of the first validation loader, where it holds one row of logits per
        target."""
        captured = self._validated_outputs[:1]
        self._validated_outputs.clear()
        if not captured or dataloader_idx != 0:
            return
        logits, (_, targets) = captured[0], split_batch(batch, self.input_key, self.target_key)
        if not (isinstance(logits, torch.Tensor) and isinstance(targets, torch.Tensor)
                and logits.ndim == 2 and targets.shape == logits.shape[:1]):
            return
        counts = torch.stack([(logits.argmax(-1) == targets).sum(),
                              torch.tensor(targets.numel(), device=targets.device)])
        self._validated_counts = counts if self._validated_counts is None else \
            self._validated_counts + counts

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the validated path's top-1 (``nas/val_top1``: the largest path under SPOS, the
        arg-max under a gradient strategy) and its MACs (``nas/val_macs``)."""
        self._validating.close()
        counts, self._validated_counts = self._validated_counts, None
        if counts is None:
            return
        correct, total = trainer.strategy.reduce(counts.float(), reduce_op="sum")
        pl_module.log("nas/val_top1", correct / total)
        if self.cost_table is not None:
            pl_module.log("nas/val_macs", float(self.cost_table(self._validated).macs))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_winner(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore_winner(trainer, pl_module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._meter = EnergyMeter(pl_module.device, trainer.num_devices)
        self._meter.start()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.check_searched(f"strategy {self.strategy.name!r}")
        scores: dict[str, float] = {}  # held-out scores on these weights, shared by budgets
        self.results = []
        for index, budget in enumerate(self.budgets or (self.budget,)):
            winners = tuple(result.sample for result in self.results)  # of tighter budgets
            self.results.append(self._search(trainer, pl_module, budget,
                                             self._export_dir_of(index), scores, winners))
        self.result = self.results[-1]  # left active in the model
        self._winner = (_fingerprint(dict(self._supernet.named_parameters())),
                        [buffer.detach().clone() for buffer in self._supernet.buffers()])
        energy, method = self._meter.stop()  # of the whole fit: the budgets share it
        if self.budgets is None:
            self.result.cost.update(energy_kwh=energy, co2_kg=co2_kg(energy), method=method)
        if self.export_dir is not None and trainer.is_global_zero:
            if self.budgets is None:
                export_architecture(self.export_dir, self._supernet, self.result,
                                    self.overwrite)
            else:
                write_budget_table(self.export_dir, self.results, self.budgets)
            for index in range(len(self.results)):
                (self._export_dir_of(index) / SEARCH_STATE_FILE).unlink(missing_ok=True)

    def _search(self, trainer: Trainer, pl_module: LightningModule, budget: Budget | None,
                directory: Path | None, scores: dict[str, float],
                seeds: tuple[Sample, ...] = ()) -> SearchResult:
        """Search the trained supernet within ``budget`` (held-out scores already in
        ``scores`` are reused; ``seeds`` are ranked beside the searched samples) and leave
        the winner active with its own batch norm."""
        started, was_training = time.perf_counter(), pl_module.training
        self._context.budget = budget
        scoring, calibrate = self._scoring(trainer, pl_module, directory, scores, seeds)
        result = self.strategy.finish(scoring)
        calibrate(result.sample)  # its score may have come from the shared scores
        pl_module.train(was_training)
        if trainer.world_size > 1:  # the ranks share their scores and data, so they found
            # the same winner; its statistics are made bitwise equal (GPU reductions vary)
            buffers = [buffer.cpu() for buffer in self._supernet.buffers()]
            result, buffers = trainer.strategy.broadcast((result, buffers), src=0)
            activate(self._supernet, result.sample, self.space)
            with torch.no_grad():
                for mine, chosen in zip(self._supernet.buffers(), buffers):
                    mine.copy_(chosen)
        result.cost = SearchCost(
            train_seconds=self.train_seconds, search_seconds=time.perf_counter() - started,
            devices=trainer.num_devices, device=str(pl_module.device)).to_json()
        result.precision, result.costs_cover = str(trainer.precision), self._costs_cover(pl_module)
        if result.note:
            rank_zero_warn(f"OneShotNAS: {result.note}")
        suffix, chosen = ("" if self.budgets is None else f"/{budget}"), result.chosen
        for logger in trainer.loggers:
            logger.log_metrics({f"nas/best_score{suffix}": result.score,
                                f"nas/best_macs{suffix}": chosen.macs,
                                f"nas/best_params{suffix}": chosen.params},
                               step=trainer.global_step)
        within = "" if budget is None else f" within {budget}"
        how = (f"the most probable architecture{within} (probability {chosen.probability:.3g})"
               if chosen.probability is not None else f"the best held-out score{within}")
        rank_zero_info(f"OneShotNAS: chose {how}: held-out top-1 {result.score:.4f} at "
                       f"{chosen.cost}: {result.sample}")
        if self.budgets is not None and directory is not None and trainer.is_global_zero:
            # export now, while this winner's statistics are in the supernet
            export_architecture(directory, self._supernet, result, self.overwrite)
        return result

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.state_dict(), **self.outer_state(),
                "result": None if self.result is None else self.result.to_json(),
                "results": [result.to_json() for result in self.results]}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._loading_into_fit = trainer.state.fn == TrainerFn.FITTING

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._loading_into_fit and self.result is not None:
            return  # a checkpoint of this fit, loaded to test or predict: the search stands
        self.strategy.load_state_dict(state_dict["strategy"])  # setup built its parameters
        self.load_outer_state(state_dict)
        result = state_dict.get("result")
        self.result = None if result is None else SearchResult.from_json(result)
        self.results = [SearchResult.from_json(r) for r in state_dict.get("results", [])]

    # ---- internals ------------------------------------------------------------------------
    def _export_dir_of(self, index: int) -> Path | None:
        """Where the result of the ``index``-th budget goes."""
        if self.export_dir is None or self.budgets is None:
            return self.export_dir
        return self.export_dir / f"budget_{index}"

    def _find_supernet(self, pl_module: LightningModule) -> nn.Module:
        """The supernet to search (``supernet=`` or the one ``pl_module`` holds); to be
        elasticized, the one timm model inside ``pl_module`` (so labels and weight names are
        the timm model's own, wherever it sits)."""
        if self.elastic is None or self.supernet is not None or \
                any(supernet_info(m) is not None for m in pl_module.modules()):
            return find_supernet(pl_module, self.supernet)
        from ..elastic_models.family import MODELS

        found = outermost(pl_module, lambda m: type(m) in MODELS.values())
        if len(found) > 1:
            raise ValueError(f"{type(pl_module).__name__} holds {len(found)} timm models "
                             f"({', '.join(name for name, _ in found)}): say which to "
                             f"elasticize with supernet={found[-1][0]!r}")
        return found[0][1] if found else pl_module

    def _costs_cover(self, pl_module: LightningModule) -> str | None:
        """What the costs leave out: the LightningModule's weights outside the supernet."""
        inside = {id(p) for p in self._supernet.parameters()}
        outside = [(n, p.numel()) for n, p in pl_module.named_parameters() if id(p) not in inside]
        if not outside:
            return None
        names = ", ".join(name for name, _ in outside[:3]) + (", ..." if len(outside) > 3 else "")
        return (f"the supernet only: {sum(n for _, n in outside):,} parameters of "
                f"{type(pl_module).__name__} outside it ({names}) and their MACs are not "
                "counted")

    def _restore_winner(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Outside fitting, run the searched architecture with its own batch-norm statistics,
        also after a checkpoint of the fit (saved before the search ended) loaded into the
        model: the winner's statistics come back on the same weights, and are recalibrated
        on the search's batches on other ones."""
        if self.result is None:
            return
        supernet = self._supernet if self._context is not None else \
            find_supernet(pl_module, self.supernet)
        activate(supernet, self.result.sample)
        if self._winner is None:  # a result restored from a checkpoint saved after the search
            return
        fingerprint, buffers = self._winner
        if _fingerprint(dict(supernet.named_parameters())) == fingerprint:
            with torch.no_grad():
                for mine, chosen in zip(supernet.buffers(), buffers):
                    mine.copy_(chosen)
        elif self._calibration:
            rank_zero_warn("OneShotNAS: the model holds other weights than the search scored "
                           "(a checkpoint from before its end): batch norm is recalibrated for "
                           "the searched architecture on the search's calibration batches")
            was_training = pl_module.training
            with trainer.precision_plugin.forward_context():
                recalibrate_batch_norm(supernet, pl_module, self._calibration)
            pl_module.train(was_training)

    @property
    def _needs_latency(self) -> bool:
        return self.budget is not None and self.budget.latency_ms is not None

    def _build_cost_table(self, input_shape: tuple[int, ...],
                          device: torch.device | None = None) -> None:
        """The cost table, and the budget checked against it; a latency budget needs the
        latency measured on the fit's ``device``, which ``on_fit_start`` supplies (the model
        is not on it during ``setup``). A timm supernet is first checked to export."""
        info = supernet_info(self._supernet)
        if info is not None and info.origin == "timm":
            from ..elastic_models.timm_export import check_exportable

            check_exportable(self._supernet, input_shape)
        self._context.cost_table = CostTable.build(self._supernet, input_shape, self._counter,
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
        smallest = self.cost_table(self.space.smallest())
        if self.budget is not None and not self.budget.allows(smallest):
            raise ValueError(
                f"{self.budget} is below the smallest sub-network of this space ({smallest} for "
                f"inputs of shape {self.cost_table.input_shape}); raise the budget to at least "
                "that")
        self.strategy.check_budget()

    def _batches(self, loader: Any, trainer: Trainer, limit: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for i, batch in enumerate(loader):
            if limit is not None and i >= limit:
                return
            yield split_batch(to_device(trainer, batch), self.input_key, self.target_key)

    def _scoring(self, trainer: Trainer, pl_module: LightningModule, directory: Path | None,
                 scores: dict[str, float], seeds: tuple[Sample, ...] = ()
                 ) -> tuple[Scoring, Callable[[Sample], None]]:
        """Held-out top-1 of a sample, its batch norm recalibrated (the sample stays active;
        a score in ``scores`` is reused, and new ones go there); a search state an
        interrupted search on these same weights saved in ``directory``. And the function
        that activates a sample with its batch norm recalibrated.

        With several processes, every rank scores on the same data (rank 0's calibration
        batches, the held-out batches of every rank) and scores its share of each batch of
        samples the search offers; the scores are shared, so every rank holds all of them."""
        heldout, train = self.heldout_loader(trainer), trainer.train_dataloader
        set_sampler_epoch(train, trainer.current_epoch)  # the same batches after a resume
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            calibration = [x for x, _ in self._batches(train, trainer, self.calibration_batches)]
        spread = trainer.world_size > 1
        if spread:
            device = calibration[0].device
            calibration = [x.to(device) for x in trainer.strategy.broadcast(
                [x.cpu() for x in calibration], src=0)]
            every_heldout = self._every_rank_batches(heldout, trainer)
        supernet, self._calibration = self._supernet, calibration

        def calibrate(sample: Sample) -> None:
            activate(supernet, sample, self.space)
            with trainer.precision_plugin.forward_context():
                recalibrate_batch_norm(supernet, pl_module, calibration)

        def evaluate(sample: Sample) -> float:
            key = sample_key(sample)
            if key not in scores:
                calibrate(sample)
                pl_module.eval()
                with trainer.precision_plugin.forward_context(), as_validation(trainer):
                    # batch hooks see held-out data as validation data
                    batches = every_heldout if spread else self._batches(heldout, trainer)
                    scores[key] = top1_accuracy(pl_module, batches)
            return scores[key]

        def evaluate_many(samples: list[Sample]) -> list[float]:
            new = list({sample_key(s): s for s in samples if sample_key(s) not in scores}.items())
            rank, world = trainer.global_rank, trainer.world_size
            mine = [evaluate(sample) for _, sample in new[rank::world]]
            for source in range(world):
                shared = trainer.strategy.broadcast(mine, src=source)
                scores.update((key, score) for (key, _), score in zip(new[source::world], shared))
            return [scores[sample_key(sample)] for sample in samples]

        saved, save_state = None, lambda state: None
        if directory is not None and trainer.is_global_zero:
            saved, save_state = self._search_state_file(supernet, directory)
        if trainer.world_size > 1:  # every rank continues rank 0's search, in step with it
            saved = trainer.strategy.broadcast(saved, src=0)
        scoring = Scoring(evaluate=evaluate, top_k=self.top_k,
                          progress=self.progress and trainer.is_global_zero,
                          on_candidate=lambda candidate: self._meter.sample(),
                          saved=saved, save_state=save_state, seeds=seeds,
                          evaluate_many=evaluate_many if spread else None)
        return scoring, calibrate

    def _every_rank_batches(self, loader: Any, trainer: Trainer
                            ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The batches of ``loader`` on every rank (each reads its own shard), in rank order,
        on this rank's device; batch hooks see them as validation data."""
        with as_validation(trainer):
            mine = [(x.cpu(), None if y is None else y.cpu())
                    for x, y in self._batches(loader, trainer)]
        device = trainer.strategy.root_device
        return [(x.to(device), None if y is None else y.to(device))
                for source in range(trainer.world_size)
                for x, y in trainer.strategy.broadcast(mine, src=source)]

    def _search_state_file(self, supernet: nn.Module, directory: Path
                           ) -> tuple[dict | None, Callable[[dict], None]]:
        """The state an interrupted search on these weights left in ``directory``, and the
        function that saves the running search's state there (atomically)."""
        path = directory / SEARCH_STATE_FILE
        key = {"fingerprint": _fingerprint(supernet.state_dict()), "strategy": repr(self.strategy),
               "searcher": repr(self.search),
               "budget": None if self._context.budget is None
               else dataclasses.asdict(self._context.budget)}
        saved = None
        if path.exists():
            data = json.loads(path.read_text())
            if {k: data.get(k) for k in key} == key:
                saved = data["state"]
                rank_zero_info(f"OneShotNAS: continuing the search saved in {path}")
            else:
                rank_zero_info(f"OneShotNAS: {path} holds the search of another supernet or "
                               "setting; starting afresh")
        directory.mkdir(parents=True, exist_ok=True)
        return saved, lambda state: write_json(path, {**key, "state": state}, indent=None)
