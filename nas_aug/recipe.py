"""Recipes: a whole search as data (YAML), run end to end.

supernet training + constrained search (``OneShotNAS``), with the augmentation policy searched
in the same fit when the recipe has an ``augment`` method (``AugmentSearch``) → export →
retraining from scratch of the winner, the largest sub-network within the budget (the rule of
thumb the search has to beat), the largest and the smallest sub-network (with the searched
policy, if any) → a results table.

Every fit checkpoints into ``out_dir/checkpoints/<fit>/last.ckpt`` (the supernet fit also
``searched.ckpt`` once its search is done), so ``run_recipe(..., resume=True)`` continues a
run that was stopped: each fit from its last checkpoint, a search from the state it saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .augment import Policy
from .classifier import ImageClassifier
from .constraints import Budget
from .data import DATASETS
from .export import Architecture, build_subnet, check_export_dir, load_architecture
from .io import atomic_write, read_json, write_json
from .result import Candidate, SearchResult
from .space.choice import sample_key
from .strategies import Evolution, get_strategy
from .strategies.base import LARGEST_WITHIN
from .supernet import extract_subnet, supernet_info
from .validation import check_int, check_positive, closest_match


@dataclass
class DataConfig:
    name: str = "digits"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpaceConfig:
    name: str = "mobilenet_tiny"
    kwargs: dict[str, Any] = field(default_factory=dict)


def _at_least(low: int) -> dict[str, Any]:
    """A recipe field that takes integers from ``low`` on."""
    return {"check": functools.partial(check_int, low=low)}


_POSITIVE = {"check": check_positive}
_NON_NEGATIVE = {"check": functools.partial(check_positive, allow_zero=True)}


def _check_probability(name: str, value: Any) -> None:
    check_positive(name, value, allow_zero=True, hint=" at most 1")
    if value > 1:
        raise ValueError(f"{name} must be a non-negative number at most 1, got {value!r}")


@dataclass
class SupernetConfig:
    epochs: int = field(default=30, metadata=_at_least(1))
    lr: float = field(default=5e-3, metadata=_POSITIVE)
    weight_decay: float = field(default=1e-4, metadata=_NON_NEGATIVE)
    sampling: str = "uniform"  # or "sandwich", "attentive" (SPOS's samplings)
    sandwich_random: int = field(default=1, metadata=_at_least(0))
    attentive_candidates: int = field(default=3, metadata=_at_least(2))
    attentive: str = "worst"  # or "best"


@dataclass
class BudgetConfig:
    macs: float | None = field(default=None, metadata=_POSITIVE)
    params: float | None = field(default=None, metadata=_POSITIVE)
    flops: float | None = field(default=None, metadata=_POSITIVE)
    latency_ms: float | None = field(default=None, metadata=_POSITIVE)  # on the fit's device


@dataclass
class SearchConfig:
    strategy: str = "spos"  # a name in nas_aug.strategies.STRATEGIES (spos, darts, ...)
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's options
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    # several increasing budgets instead: one search each of the one trained supernet, one
    # export each (out_dir/budget_<i>) and one retraining of each winner
    budgets: list[BudgetConfig] = field(default_factory=list)
    population_size: int = field(default=16, metadata=_at_least(2))
    generations: int = field(default=8, metadata=_at_least(1))
    mutation_prob: float = field(default=0.1, metadata={"check": _check_probability})
    calibration_batches: int = field(default=8, metadata=_at_least(1))


@dataclass
class RetrainConfig:
    epochs: int = field(default=30, metadata=_at_least(0))  # 0: the rows are untrained networks
    lr: float = field(default=5e-3, metadata=_POSITIVE)
    weight_decay: float = field(default=1e-4, metadata=_NON_NEGATIVE)


@dataclass
class AugmentConfig:
    method: str | None = None  # "dada" or "randaugment": searched in the supernet fit
    options: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None  # or a fixed preset (Policy.presets()) for every fit
    base: bool = False  # the fixed policy inside crop + flip ... Cutout (Policy.within_base)


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    precision: str = "32-true"
    strategy: str = "auto"  # Lightning's: "ddp" (or "ddp_find_unused_parameters_true" for SPOS)


@dataclass
class Recipe:
    """A whole search as plain data; see ``recipes/*.yaml``.

    >>> recipe = Recipe.from_dict({"name": "demo", "supernet": {"epochs": 2}})
    >>> recipe.supernet.epochs, recipe.search.population_size
    (2, 16)
    """

    name: str = "recipe"
    seed: int = field(default=0, metadata=_at_least(0))
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        return _build(cls, data, "recipe")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> Recipe:
        """The recipe in the YAML file ``path``, with ``overrides`` (``section.key=value``)
        applied; every error names the file or the override."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no recipe file at {str(path)!r}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} must look like section.key=value")
            *parents, leaf = key.split(".")
            node = data
            for depth, part in enumerate(parents, 1):
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"cannot apply {item!r}: {'.'.join(parents[:depth])} is "
                                     f"{node!r}, not a section")
            try:
                node[leaf] = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ValueError(f"override {item!r}: {value!r} is not a YAML value: "
                                 f"{_yaml_problem(err)}") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong with a YAML text and where (line and column counted from 1)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return problem if mark is None else f"{problem} (line {mark.line + 1}, column " \
                                        f"{mark.column + 1})"


_SECTIONS = {c.__name__: c for c in (DataConfig, SpaceConfig, SupernetConfig, BudgetConfig,
                                        SearchConfig, RetrainConfig, AugmentConfig,
                                        TrainerConfig)}
_SCALARS = {"int": int, "float": (int, float), "str": str, "bool": bool}


def _wrong_scalar(kind: str, value: Any) -> bool:
    """``value`` is not of the recipe field type ``kind`` (a bool is no number, YAML's
    ``yes`` and ``true`` are bools)."""
    if kind == "bool":
        return not isinstance(value, bool)
    return isinstance(value, bool) or not isinstance(value, _SCALARS[kind])


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(f"unknown key {where}.{key}{closest_match(key, fields)}; "
                             f"valid keys are {list(fields)}")
        kind = fields[key].type
        optional = kind.endswith(" | None")
        kind = kind.removesuffix(" | None")
        if kind == "float" and isinstance(value, str):  # YAML reads 1e-4 as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if kind in _SECTIONS:
            value = _build(_SECTIONS[kind], value, f"{where}.{key}")
        elif kind.startswith("list[") and kind[5:-1] in _SECTIONS:
            if not isinstance(value, list):
                raise ValueError(f"{where}.{key} must be a list of mappings, got {value!r}")
            value = [_build(_SECTIONS[kind[5:-1]], item, f"{where}.{key}[{index}]")
                     for index, item in enumerate(value)]
        elif kind in _SCALARS and not (value is None and optional) and \
                _wrong_scalar(kind, value):
            raise ValueError(f"{where}.{key}={value!r} must be of type {kind}"
                             + (" or null" if optional else ""))
        check = fields[key].metadata.get("check")
        if check is not None and value is not None:
            check(f"{where}.{key}", value)
        kwargs[key] = value
    return cls(**kwargs)


CHECKPOINTS = "checkpoints"  # out_dir/checkpoints/<fit>/: each fit's checkpoints
LAST, SEARCHED = "last.ckpt", "searched.ckpt"  # the last epoch's; the supernet's, searched
RUN_FILE = "run.json"  # in out_dir/checkpoints: the recipe and the seconds of each done fit
FITS = ("supernet", "inherited*", "retrain_*")  # the names of a run's fits (and their logs)


def make_trainer(recipe: Recipe, out_dir: Path, name: str, epochs: int, callbacks=(),
                 progress: bool = True) -> pl.Trainer:
    """A Trainer with the recipe's device settings, logging every training step to
    ``out_dir/logs/name/metrics.csv`` and checkpointing each epoch to
    ``out_dir/checkpoints/name/last.ckpt``; ``progress`` shows the progress bar. Device
    settings Lightning refuses raise ``ValueError`` naming the recipe's ``trainer`` section."""
    checkpoint = ModelCheckpoint(dirpath=out_dir / CHECKPOINTS / name, filename=LAST[:-5],
                                 save_top_k=1, enable_version_counter=False)  # each epoch's
    # replaces the one before (Lightning's save_last alone writes only at the end of a fit)
    settings = dataclasses.asdict(recipe.trainer)
    try:
        return pl.Trainer(max_epochs=epochs, callbacks=[*callbacks, checkpoint], **settings,
                          logger=CSVLogger(out_dir, name="logs", version=name,
                                           flush_logs_every_n_steps=1),  # none lost to a kill
                          log_every_n_steps=1,  # Lightning's 50 logs nothing in a short run
                          enable_model_summary=False, enable_progress_bar=progress,
                          deterministic="warn", default_root_dir=out_dir)
    except (TypeError, ValueError) as err:  # Lightning's MisconfigurationException included
        raise ValueError(f"recipe.trainer {settings} is refused by Lightning: {err}") from None


def make_datamodule(recipe: Recipe) -> pl.LightningDataModule:
    """The recipe's datamodule (its ``data.kwargs`` checked against the dataset's)."""
    datamodule = DATASETS.get(recipe.data.name)
    accepted = set(inspect.signature(datamodule).parameters) - {"seed"}
    unknown = sorted(set(recipe.data.kwargs) - accepted)
    if unknown:
        raise ValueError(f"data.kwargs {unknown} are not accepted by dataset "
                         f"{recipe.data.name!r}; it accepts {sorted(accepted)}")
    return datamodule(seed=recipe.seed, **recipe.data.kwargs)


def make_search(recipe: Recipe, out_dir: Path, overwrite: bool = False, progress: bool = True
                ) -> tuple[ImageClassifier, list[pl.Callback]]:
    """The supernet in an ``ImageClassifier`` and the search callbacks (``OneShotNAS`` first,
    then ``AugmentSearch`` when the recipe has an augment method) for the supernet fit."""
    from .callbacks import AugmentSearch, OneShotNAS
    from .search_spaces import create_space

    supernet = create_space(recipe.space.name, **recipe.space.kwargs)
    search = recipe.search
    options = dict(search.options)
    defaults = SupernetConfig()
    # a path sampling other than the default goes to the strategy, which refuses it if it
    # samples no paths
    for key in ("sampling", "sandwich_random", "attentive_candidates", "attentive"):
        value = getattr(recipe.supernet, key)
        if value != getattr(defaults, key):
            options[key] = value
    own = {key: options.pop(key) for key in ("top_k", "unroll_lr") if key in options}
    strategy = get_strategy(search.strategy, **options)  # the rest is the strategy's
    searcher = Evolution(population_size=search.population_size, generations=search.generations,
                         mutation_prob=search.mutation_prob)
    budget, budgets = _budgets(search)
    nas = OneShotNAS(budget=budget, budgets=budgets, strategy=strategy,
                     search=searcher if strategy.uses_searcher else None, export_dir=out_dir,
                     calibration_batches=search.calibration_batches, seed=recipe.seed,
                     overwrite=overwrite, progress=progress, **own)
    if recipe.augment.options and recipe.augment.method is None:
        raise ValueError(f"augment.options need an augment.method (dada or randaugment), got "
                         f"options {recipe.augment.options!r} and no method")
    fixed = fixed_policy(recipe.augment)
    callbacks = [nas]
    if recipe.augment.method is not None:  # bad methods and options fail here, before training
        callbacks.append(AugmentSearch(recipe.augment.method, export_dir=out_dir,
                                       seed=recipe.seed, overwrite=overwrite,
                                       **recipe.augment.options))
    model = ImageClassifier(supernet, recipe.supernet.lr, recipe.supernet.weight_decay,
                            policy=fixed, augment_seed=recipe.seed)
    return model, callbacks


def fixed_policy(augment: AugmentConfig) -> Policy | None:
    """The recipe's fixed policy (``augment.policy``, inside the base pipeline with
    ``augment.base``), or ``None``; a policy beside a search, or a base without a policy, is
    refused."""
    if augment.policy is None:
        if augment.base:
            raise ValueError("recipe.augment.base puts a fixed augment.policy inside crop + "
                             "flip ... Cutout; set augment.policy too (a preset of "
                             f"{list(Policy.presets())}, 'none' for the base alone)")
        return None
    if augment.method is not None:
        raise ValueError(f"recipe.augment sets both method {augment.method!r} (a searched "
                         f"policy) and policy {augment.policy!r} (a fixed one); set one")
    try:
        policy = Policy.preset(augment.policy)
    except ValueError as error:
        raise ValueError(f"recipe.augment.policy: {error}") from None
    return policy.within_base() if augment.base else policy


def limits(config: BudgetConfig) -> dict[str, float]:
    """The limits a budget section sets, as ``Budget``'s keyword arguments."""
    return {k: v for k, v in dataclasses.asdict(config).items() if v is not None}


def _budgets(search: SearchConfig) -> tuple[Budget | None, list[Budget] | None]:
    """The search's ``budget`` (``None``: no limit) and ``budgets`` (``None``: one search)."""
    def budget(config: BudgetConfig, where: str) -> Budget:
        if not limits(config):
            raise ValueError(f"{where} sets no limit; give it macs, params, flops or "
                             "latency_ms")
        return Budget(**limits(config))

    if not search.budgets:
        return (Budget(**limits(search.budget)) if limits(search.budget) else None), None
    if limits(search.budget):
        raise ValueError(f"recipe.search sets both budget {limits(search.budget)} and budgets: "
                         "set budget for one search, or budgets for one search per budget "
                         "(--set search.budget={} clears a recipe's budget)")
    return None, [budget(config, f"recipe.search.budgets[{index}]")
                  for index, config in enumerate(search.budgets)]


def run_recipe(recipe: Recipe, out_dir: str | Path, overwrite: bool = False,
               quiet: bool = False, resume: bool = False) -> list[dict]:
    """Run ``recipe``, writing the export and ``results.md`` to ``out_dir``; prints the results
    table and returns its rows. ``quiet``: no progress bars and no Lightning info logs
    (warnings and errors still show). ``resume``: continue the run of this recipe that
    ``out_dir`` holds from its checkpoints; ``overwrite``: start afresh over it."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    run = _RunState(out_dir, recipe, overwrite, resume)
    progress = not quiet
    with _lightning_info_logs(enabled=progress):
        datamodule = make_datamodule(recipe)
        start = time.perf_counter()
        pl.seed_everything(recipe.seed, verbose=False)
        model, callbacks = make_search(recipe, out_dir, overwrite or resume, progress)
        trainer = make_trainer(recipe, out_dir, "supernet", recipe.supernet.epochs, callbacks,
                               progress)
        resumed_from = run.checkpoint("supernet", SEARCHED, LAST)
        trainer.fit(model, datamodule, ckpt_path=resumed_from)
        run.save_searched(trainer)
        search_seconds = run.seconds("supernet", time.perf_counter() - start, trainer)
        nas = callbacks[0]  # every process holds rank 0's results
        searched = _searched(nas, out_dir, trainer)
        result = nas.result  # the last budget's
        policy = fixed_policy(recipe.augment) if len(callbacks) == 1 else \
            Policy.from_json(callbacks[1].result["policy"])

        rows, to_train = [], []
        for name, suffix, found, directory in searched:
            if directory is None:  # one search: its winner is active in the supernet
                example = torch.zeros(1, *found.input_shape, device=model.device)
                inherited = extract_subnet(model.net, found.sample, example)
            else:  # several: each winner was exported with its own batch-norm statistics
                inherited = build_subnet(load_architecture(directory))
            accuracy, _ = _test(inherited, datamodule, out_dir, f"inherited{suffix}", recipe,
                                None, epochs=0, progress=progress)
            rows.append(_row(f"{name}, inherited weights", found.chosen, found.score, accuracy))
            to_train.append((name, f"retrain_searched{suffix}", found.chosen, found.score))
            if (fits := found.references.get(LARGEST_WITHIN)) is not None:
                to_train.append((LARGEST_WITHIN if directory is None else
                                 name.replace("searched", "largest", 1),
                                 f"retrain_largest_within{suffix}", fits, None))
        to_train += [(name, f"retrain_{name}", candidate, None)
                     for name, candidate in result.references.items() if name != LARGEST_WITHIN]
        info, trained = supernet_info(model.net), {}
        for name, fit, candidate, heldout in to_train:
            key = sample_key(candidate.sample)
            if key not in trained:  # a network two budgets chose is trained once
                rebuilt = Architecture(space=info.space_name, space_kwargs=info.space_kwargs,
                                       sample=candidate.sample, input_shape=result.input_shape)
                pl.seed_everything(recipe.seed, verbose=False)
                trained[key] = _test(build_subnet(rebuilt, weights=False), datamodule, out_dir,
                                     fit, recipe, policy, epochs=recipe.retrain.epochs,
                                     progress=progress, run=run)
            accuracy, seconds = trained[key]
            rows.append(_row(f"{name}, retrained from scratch", candidate, heldout, accuracy))
            if fit.startswith("retrain_searched"):
                winner_seconds = seconds  # the last search's
    table_md = render_results(rows, recipe, search_seconds, winner_seconds,
                              time.perf_counter() - start, policy, resumed=run.resume)
    if trainer.is_global_zero:
        atomic_write(out_dir / "results.md", lambda p: p.write_text(table_md))
        print(table_md)
    return rows


class _RunState:
    """What ``out_dir/checkpoints`` holds of a run: the checkpoints each fit continues from
    when resuming, and ``run.json`` (the recipe, the seconds of each finished fit).

    A folder holding a run's checkpoints is refused unless the run is resumed or overwritten;
    resuming needs a run of the same recipe. Only the run's own folders are ever removed
    (``checkpoints/`` and the logs of its fits), by an overwrite or when the earlier run
    stopped before its first checkpoint."""

    def __init__(self, out_dir: Path, recipe: Recipe, overwrite: bool, resume: bool):
        if overwrite and resume:
            raise ValueError("pass either resume=True (continue the run in the folder) or "
                             "overwrite=True (start afresh over it), not both")
        self.folder, self.resume = out_dir / CHECKPOINTS, resume
        path = self.folder / RUN_FILE
        settings = json.loads(json.dumps(dataclasses.asdict(recipe)))  # as run.json holds it
        if resume:
            if not path.is_file():
                raise FileNotFoundError(
                    f"nothing to resume in {str(out_dir)!r}: it holds no {CHECKPOINTS}/"
                    f"{RUN_FILE} of an earlier run; run without resume=True to start one")
            saved = read_json(path, "the run's record")
            if saved.get("recipe") != settings:
                raise ValueError(f"{str(out_dir)!r} holds a run of another recipe ("
                                 f"{_differences(saved.get('recipe') or {}, settings)}): "
                                 "resume it with the recipe and overrides it was started "
                                 "with, or start afresh with overwrite=True")
            self.record = saved
            return
        self.record = {"recipe": settings, "seconds": {}}
        if rank_zero_only.rank != 0:  # a process Lightning launched for a fit: rank 0 has
            return  # checked and prepared the folder
        earlier = path.is_file()  # a run was started here
        if earlier and any(self.folder.rglob("*.ckpt")) and not overwrite:
            raise FileExistsError(f"{str(out_dir)!r} holds the checkpoints of an earlier run "
                                  f"({CHECKPOINTS}/): continue it with resume=True, or pass "
                                  "overwrite=True to start afresh")
        check_export_dir(out_dir, overwrite)
        if earlier:
            logs = [folder for fit in FITS for folder in (out_dir / "logs").glob(fit)]
            for folder in (self.folder, *logs):
                shutil.rmtree(folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, self.record)

    def checkpoint(self, fit: str, *names: str) -> Path | None:
        """The first of ``names`` in ``fit``'s checkpoints, when resuming."""
        if not self.resume:
            return None
        found = (self.folder / fit / name for name in names)
        return next((path for path in found if path.is_file()), None)

    def seconds(self, fit: str, measured: float, trainer: pl.Trainer) -> float:
        """The seconds of ``fit``: those of its first finished run, kept in ``run.json``
        (``measured`` if this is it)."""
        done = self.record["seconds"]
        if fit in done:
            return done[fit]
        done[fit] = measured
        if trainer.is_global_zero:
            write_json(self.folder / RUN_FILE, self.record)
        return measured

    def save_searched(self, trainer: pl.Trainer) -> None:
        """Checkpoint the searched supernet (the search's result in its callbacks' state) to
        ``supernet/searched.ckpt``, whole or not at all."""
        path = self.folder / "supernet" / SEARCHED
        if path.is_file():  # the fit was resumed from it
            return
        staging = path.with_name(f".{SEARCHED}.tmp")
        trainer.save_checkpoint(staging)
        if trainer.is_global_zero:
            os.replace(staging, path)


def _differences(saved: dict, now: dict, where: str = "recipe") -> str:
    """Where two recipes (as dictionaries) differ, key by key."""
    found = []
    for key in sorted(set(saved) | set(now), key=str):
        then, value = saved.get(key), now.get(key)
        if isinstance(then, dict) and isinstance(value, dict):
            found.append(_differences(then, value, f"{where}.{key}"))
        elif then != value:
            found.append(f"{where}.{key}: {then!r} then, {value!r} now")
    return ", ".join(item for item in found if item)


def _searched(nas, out_dir: Path, trainer: pl.Trainer
              ) -> list[tuple[str, str, SearchResult, Path | None]]:
    """Each search of ``nas``: its row name, the suffix of its fits' names, its result and
    its export folder (``None`` for a single search, whose winner the supernet holds)."""
    if nas.budgets is None:
        return [("searched", "", nas.result, None)]
    trainer.strategy.barrier("exported")  # rank 0 has written every budget's export
    return [(f"searched within {budget}", f"_{index}", result, out_dir / f"budget_{index}")
            for index, (budget, result) in enumerate(zip(nas.budgets, nas.results))]


def training_cost(recipe: Recipe) -> str:
    """What ``run_recipe`` trains: the supernet, then from scratch each search's winner and,
    with a budget, the largest sub-network within it, and the largest and the smallest
    sub-network (networks that coincide are trained once, which this does not foresee).

    >>> training_cost(Recipe.from_dict({"supernet": {"epochs": 5}, "retrain": {"epochs": 2},
    ...                                 "search": {"budget": {"macs": 1e6}}}))
    '5 supernet epochs + 4 retrainings x 2 epochs'
    """
    search = recipe.search
    searches = len(search.budgets) or 1
    budgeted = bool(search.budgets or limits(search.budget))
    return (f"{recipe.supernet.epochs} supernet epochs + {searches * (1 + budgeted) + 2} "
            f"retrainings x {recipe.retrain.epochs} epochs")


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an ``out_dir`` that is, or lies below, an existing file."""
    existing = next(path for path in (out_dir, *out_dir.parents) if path.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"output directory {str(out_dir)!r} cannot be used: "
                                 f"{str(existing)!r} is a file; choose a directory (it is "
                                 "created if missing)")


# Lightning's loggers, under both of its package names (a suite that also imports the
# standalone pytorch_lightning, as NNI does, sees its records under the second pair)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                     "lightning_fabric")


@contextlib.contextmanager
def _lightning_info_logs(enabled: bool):
    """Lightning's info logs (the callbacks' ``rank_zero_info`` included) shown, or raised to
    warnings and errors only, for the ``with`` block."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    if not enabled:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def retrain(net, datamodule, out_dir: Path, name: str, recipe: Recipe, policy: Policy | None,
            epochs: int, progress: bool = True, ckpt_path: Path | None = None
            ) -> tuple[ImageClassifier, pl.Trainer, float]:
    """``net`` in an ``ImageClassifier`` trained for ``epochs`` with the recipe's retraining
    settings (augmented by ``policy``), continued from ``ckpt_path`` if given; with its
    trainer and the training's seconds."""
    module = ImageClassifier(net, recipe.retrain.lr, recipe.retrain.weight_decay,
                             policy=policy, augment_seed=recipe.seed)
    trainer = make_trainer(recipe, out_dir, name, epochs, progress=progress)
    started = time.perf_counter()
    if epochs:
        trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    return module, trainer, time.perf_counter() - started


def _test(net, datamodule, out_dir: Path, name: str, recipe: Recipe, policy: Policy | None,
          epochs: int, progress: bool = True, run: _RunState | None = None
          ) -> tuple[float, float]:
    """Test accuracy of ``net`` after ``epochs`` of training (augmented by ``policy``), and
    the training's seconds; a fit of ``run`` continues from its checkpoint when resuming."""
    resumed_from = None if run is None else run.checkpoint(name, LAST)
    module, trainer, seconds = retrain(net, datamodule, out_dir, name, recipe, policy, epochs,
                                       progress, resumed_from)
    if run is not None and epochs:
        seconds = run.seconds(name, seconds, trainer)
    (metrics,) = trainer.test(module, datamodule, verbose=False)
    return float(metrics["test_acc"]), seconds


def _row(name: str, candidate: Candidate, heldout: float | None, test_acc: float) -> dict:
    return {"model": name, "macs": candidate.macs, "params": candidate.params,
            "heldout": heldout, "test": test_acc}


def render_results(rows: list[dict], recipe: Recipe, search_s: float, winner_s: float,
                   total_s: float, policy: Policy | None = None, min_seconds: float = 1.0,
                   resumed: bool = False) -> str:
    """``results.md``: the table of ``rows``, what the search cost against one training of
    the winner (``winner_s`` seconds; no ratio when it was not retrained or trained under
    ``min_seconds``), the policy searched, and the recipe. ``resumed``: the run was continued
    from its checkpoints (``total_s`` counts the continued part)."""
    def epochs(count: int) -> str:
        return f"{count} epoch" if count == 1 else f"{count} epochs"

    lines = [f"# Results: {recipe.name}", "",
             "| model | MACs | params | held-out top-1 (supernet) | test top-1 |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        heldout = "-" if row["heldout"] is None else f"{row['heldout']:.4f}"
        lines.append(f"| {row['model']} | {row['macs']:,} | {row['params']:,} | {heldout} "
                     f"| {row['test']:.4f} |")
    retrain_epochs = recipe.retrain.epochs
    if retrain_epochs == 0:
        winner = ("the winner was not retrained (retrain.epochs is 0), so there is no search "
                  "cost to set against a training of it")
    elif winner_s < min_seconds:
        winner = (f"one standalone training of the winner: {winner_s:.2f} s "
                  f"({epochs(retrain_epochs)}), too short for the search cost to be "
                  "meaningful as a multiple of it")
    else:
        winner = (f"one standalone training of the winner: {winner_s:.0f} s "
                  f"({epochs(retrain_epochs)}); search cost = {search_s / winner_s:.1f}x "
                  "that training")
    lines += ["", f"Supernet training + search: {search_s:.0f} s "
              f"({epochs(recipe.supernet.epochs)}); {winner}. Whole run: {total_s:.0f} s.",
              "MACs are multiply-adds for one input (fvcore's 'flops')."]
    if resumed:
        lines.append("This run was resumed from its checkpoints: the whole run's seconds count "
                     "the resumed part only, and so do those of a fit that was interrupted.")
    if policy is not None and recipe.augment.method is None:
        lines.append(f"The fixed augmentation policy {policy.name!r} augments the supernet fit "
                     "and every retraining.")
    elif policy is not None:
        lines.append(f"The augmentation policy was searched in the supernet fit "
                     f"({recipe.augment.method}; `policy.json`, {len(policy.sub_policies)} "
                     f"sub-policies, {policy.draws_per_sample} drawn per sample) and augments "
                     "every retraining.")
    lines += ["",
              "```yaml", yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False).strip(), "```"]
    return "\n".join(lines) + "\n"
