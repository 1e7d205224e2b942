"""Rows 4 and 6 of the suite (and row 5 again, on Fashion-MNIST): quality on Fashion-MNIST under
the MACs budget of ``recipes/fashion_mnist_spos.yaml``, with the recipe's own pieces
(``make_datamodule``, ``make_search``, ``retrain``), scaled down by a :class:`QualityMode`.

4. The searched architecture (``OneShotNAS``: SPOS + evolution, as the recipe) vs random
   architectures within the budget vs one hand-picked architecture, each retrained from scratch
   with the same schedule over several seeds (seed = training order + initialisation).
6. Random search that trains candidates fully (the same schedule) for as long as our whole search
   took, picking the best on the held-out split, vs the searched architecture retrained.
5b. Kendall tau between supernet-inherited and standalone held-out accuracy over every
   architecture trained above with the recipe's seed (topped up with random ones to ``rank_archs``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import lightning.pytorch as pl
from scipy.stats import kendalltau
from torch import nn

from nas_aug import Architecture, Budget, build_subnet, load_architecture
from nas_aug.constraints import CostTable
from nas_aug.recipe import (
    Recipe,
    limits,
    make_datamodule,
    make_search,
    make_trainer,
    retrain,
)
from nas_aug.search_spaces import create_space
from nas_aug.space import Sample
from nas_aug.space.choice import sample_key
from nas_aug.strategies.evaluation import recalibrate_batch_norm, top1_accuracy
from nas_aug.supernet import activate, canonical_sample, space_of

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fashion_mnist_spos.yaml"
HAND_RULE = ("kernel 3 and the widest head everywhere, full depth, one expand ratio for every "
             "block: the largest that fits the budget; if none fits, the smallest ratio with "
             "blocks removed one at a time from the last stage backwards until it fits")


QUALITY_FIGURES = {"4": "4. Quality (Fashion-MNIST)",
                   "5b": "5b. Ranking fidelity (Fashion-MNIST)",
                   "6": "6. Random-search baseline (Fashion-MNIST)"}


@dataclass
class Row:
    """One line of the suite's table."""

    figure: str
    value: str  # the ratio (or the rank correlation, or the accuracies compared)
    raw: str  # the numbers it is computed from, measured in this run
    how: str


@dataclass(frozen=True)
class QualityMode:
    epochs: int  # the supernet fit and every retraining (the recipe: 20 and 20)
    train_fraction: float  # of the 60000 training images minus the held-out ones (recipe: 0.25)
    heldout_fraction: float  # recipe: 0.05
    test_fraction: float  # of the 10000 official test images
    population: int  # evolution (recipe: 16 x 8)
    generations: int
    seeds: tuple[int, ...]  # row 4: each architecture retrained once per seed
    random_archs: int = 5  # row 4
    rank_archs: int = 10  # row 5b: at least this many architectures


QUALITY_MODES = {
    "quick": QualityMode(epochs=3, train_fraction=0.03, heldout_fraction=0.02, test_fraction=0.2,
                         population=8, generations=3, seeds=(0,)),
    "full": QualityMode(epochs=5, train_fraction=0.1, heldout_fraction=0.05, test_fraction=1.0,
                        population=16, generations=8, seeds=(0, 1, 2)),
}


@dataclass
class Trained:
    """One architecture trained from scratch with one seed."""

    name: str
    sample: Sample
    macs: int
    params: int
    seed: int
    seconds: float
    heldout: float
    module: nn.Module
    test: float | None = None


def load_recipe(mode: QualityMode, overrides: tuple[str, ...] = ()) -> Recipe:
    """The Fashion-MNIST recipe on CPU, scaled down to ``mode``, with ``overrides``."""
    overrides = [f"supernet.epochs={mode.epochs}", f"retrain.epochs={mode.epochs}",
                 f"data.kwargs.train_fraction={mode.train_fraction}",
                 f"data.kwargs.heldout_fraction={mode.heldout_fraction}",
                 f"data.kwargs.test_fraction={mode.test_fraction}",
                 f"search.population_size={mode.population}",
                 f"search.generations={mode.generations}", "trainer.accelerator=cpu",
                 *overrides]
    return Recipe.from_yaml(RECIPE, overrides)


@contextlib.contextmanager
def training_order(datamodule, seed: int) -> Iterator[None]:
    """Serve the training batches in ``seed``'s order; the splits, made once by ``setup`` from
    the recipe's seed, stay the same."""
    datamodule.setup()
    saved, datamodule.seed = datamodule.seed, seed  # read by train_dataloader's sampler only
    try:
        yield
    finally:
        datamodule.seed = saved


class QualityBench:
    """The recipe's data, space, cost table and budget; its search (:meth:`search`), and
    every retraining rows 4, 5b and 6 need."""

    def __init__(self, mode: QualityMode, out_dir: Path, overrides: tuple[str, ...] = ()):
        self.mode, self.out_dir = mode, out_dir
        self.recipe = recipe = load_recipe(mode, overrides)
        self.datamodule = make_datamodule(recipe)
        self.datamodule.setup()
        self.net = create_space(recipe.space.name, **recipe.space.kwargs)  # never trained
        self.space = space_of(self.net)
        self.table = CostTable.build(self.net, self.datamodule.input_shape)
        self.budget = Budget(**limits(recipe.search.budget))
        self.template = Architecture(space=recipe.space.name, space_kwargs=recipe.space.kwargs,
                                     sample={}, input_shape=self.datamodule.input_shape)
        self.calibration_batches = recipe.search.calibration_batches
        self.trained: list[Trained] = []  # everything trained, in order

    # ---- the search and the candidates ------------------------------------------------
    def search(self, seed: int | None = None) -> Architecture:
        """The recipe's supernet fit (SPOS + evolution + export), timed as a whole, with
        ``seed`` (default: the recipe's) for the weights, the training order and the search;
        the data split stays the recipe's."""
        recipe = self.recipe if seed is None else dataclasses.replace(self.recipe, seed=seed)
        started = time.perf_counter()
        with training_order(self.datamodule, recipe.seed):
            pl.seed_everything(recipe.seed, verbose=False)
            self.model, callbacks = make_search(recipe, self.out_dir, overwrite=True,
                                                progress=False)
            self.nas = callbacks[0]
            trainer = make_trainer(recipe, self.out_dir, "supernet", recipe.supernet.epochs,
                                   callbacks, progress=False)
            trainer.fit(self.model, self.datamodule)
        self.search_seconds = time.perf_counter() - started
        self.searched: Architecture = load_architecture(self.out_dir)
        if self.table(self.searched.sample) != self.nas.cost_table(self.searched.sample):
            raise RuntimeError("the search's cost table disagrees with the bench's")
        return self.searched

    def random_samples(self, n: int, rng: random.Random, exclude=()) -> list[Sample]:
        """``n`` distinct architectures drawn uniformly among the samples the cost table admits
        (rejection sampling), in canonical form, none of them in ``exclude``."""
        seen, out = {sample_key(s) for s in exclude}, []
        while len(out) < n:
            sample = canonical_sample(self.net, self.space.random(rng), self.space)
            if self.budget.allows(self.table(sample)) and sample_key(sample) not in seen:
                seen.add(sample_key(sample))
                out.append(sample)
        return out

    def hand_picked(self) -> Sample:
        """See ``HAND_RULE``."""
        space = self.space

        def uniform(expand, depths: dict[str, int]) -> Sample:
            sample = {}
            for label in space.labels:
                candidates = space.candidates(label)
                sample[label] = (expand if label.endswith(".expand") else
                                 3 if label.endswith(".kernel") else
                                 depths.get(label, candidates[-1]))
            return canonical_sample(self.net, sample, space)

        for expand in reversed(space.candidates("stage0.block0.expand")):
            if self.budget.allows(self.table(sample := uniform(expand, {}))):
                return sample
        expand = space.candidates("stage0.block0.expand")[0]
        depths = {label: space.candidates(label)[-1] for label in space.labels
                  if label.endswith(".depth")}
        for label in reversed(list(depths)):
            while depths[label] > space.candidates(label)[0]:
                depths[label] -= 1
                if self.budget.allows(self.table(sample := uniform(expand, depths))):
                    return sample
        raise ValueError(f"no hand-picked architecture fits {self.budget}")

    # ---- training ---------------------------------------------------------------------
    def train(self, name: str, sample: Sample, seed: int, test: bool = True) -> Trained:
        """``sample`` built freshly (``build_subnet(weights=False)``) and trained with the
        recipe's retraining schedule, ``seed`` setting the initialisation and the training
        order; its held-out top-1, and its test top-1 if ``test``."""
        arch = dataclasses.replace(self.template, sample=sample)
        with training_order(self.datamodule, seed):
            pl.seed_everything(seed, verbose=False)
            module, _, seconds = retrain(build_subnet(arch, weights=False), self.datamodule,
                                         self.out_dir, f"{name}_seed{seed}", self.recipe, None,
                                         self.recipe.retrain.epochs, progress=False)
        # batch-norm statistics recalibrated, as for every supernet candidate: short schedules
        # leave the running averages behind the weights (seen: held-out 0.32 before, 0.8 after)
        recalibrate_batch_norm(module.net, module, self.calibration())
        module.eval()
        cost = self.table(sample)
        run = Trained(name, sample, cost.macs, cost.params, seed, seconds,
                      top1_accuracy(module, self.datamodule.val_dataloader()), module)
        if test:
            self.test(run)
        self.trained.append(run)
        return run

    def random_search(self, seconds: float, rng: random.Random, seed: int, exclude=()
                      ) -> tuple[list[Trained], float]:
        """Candidates uniform within the budget (drawn by ``rng``, none in ``exclude``), each
        trained fully with ``seed``, one after another for ``seconds``: a candidate starts only
        if the mean candidate time so far still fits (the first always does). The candidates,
        each timed with its held-out scoring, and the seconds used."""
        candidates, taken = [], list(exclude)
        started = time.perf_counter()
        while not candidates or (time.perf_counter() - started
                                 + statistics.mean(c.seconds for c in candidates)) <= seconds:
            (sample,) = self.random_samples(1, rng, exclude=taken)
            taken.append(sample)
            t0 = time.perf_counter()
            run = self.train(f"random search {len(candidates) + 1}", sample, seed, test=False)
            run.seconds = time.perf_counter() - t0  # training and held-out scoring: its cost
            candidates.append(run)
        return candidates, time.perf_counter() - started

    def calibration(self) -> list:
        """The first training batches in the recipe seed's order (as many as the search uses)."""
        if not hasattr(self, "_calibration"):
            with training_order(self.datamodule, self.recipe.seed):
                self._calibration = [x for x, _ in islice(self.datamodule.train_dataloader(),
                                                          self.calibration_batches)]
        return self._calibration

    def test(self, run: Trained) -> float:
        run.test = top1_accuracy(run.module, self.datamodule.test_dataloader())
        return run.test


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def quality(bench: QualityBench) -> tuple[Row, list[str]]:
    """Row 4: searched vs random vs hand-picked, each retrained with every seed."""
    mode, recipe = bench.mode, bench.recipe
    randoms = bench.random_samples(mode.random_archs, random.Random(recipe.seed + 4),
                                   exclude=[bench.searched.sample])
    archs = {"searched": bench.searched.sample, "hand-picked": bench.hand_picked(),
             **{f"random {i + 1}": s for i, s in enumerate(randoms)}}
    runs = {name: [bench.train(name, sample, seed) for seed in mode.seeds]
            for name, sample in archs.items()}
    tests = {name: [r.test for r in rs] for name, rs in runs.items()}
    random_means = [statistics.mean(tests[n]) for n in archs if n.startswith("random")]
    details = ["## Row 4: the architectures retrained", "",
               "| architecture | MACs | params | test top-1 per seed | mean ± sd |",
               "|---|---:|---:|---|---:|"]
    for name, rs in runs.items():
        details.append(f"| {name} | {rs[0].macs:,} | {rs[0].params:,} | "
                       f"{', '.join(f'{t:.4f}' for t in tests[name])} | "
                       f"{_mean_spread(tests[name])} |")
    macs = {name: rs[0].macs for name, rs in runs.items()}
    random_macs = [macs[n] for n in archs if n.startswith("random")]
    seeds = len(mode.seeds)
    retrain_s = statistics.median(r.seconds for rs in runs.values() for r in rs)
    row = Row(QUALITY_FIGURES["4"],
              f"searched {_mean_spread(tests['searched'])} vs random "
              f"{statistics.mean(random_means):.4f} (best {max(random_means):.4f}) vs hand-picked "
              f"{_mean_spread(tests['hand-picked'])}",
              f"test top-1, mean ± sd over {seeds} seed{'s' * (seeds > 1)}; MACs: searched "
              f"{macs['searched']:,}, hand-picked {macs['hand-picked']:,}, random "
              f"{min(random_macs):,}–{max(random_macs):,}; random = mean of the "
              f"{len(random_means)} architectures' means (sd between them "
              f"{_spread(random_means)}); one retraining ≈ {retrain_s:.0f} s",
              f"searched = the recipe's `OneShotNAS` (SPOS, evolution {mode.population}×"
              f"{mode.generations}, {bench.budget}); random = uniform among samples the cost "
              f"table admits (seed {recipe.seed + 4}); hand-picked: {HAND_RULE}. Each rebuilt with "
              f"`build_subnet(weights=False)` and retrained {mode.epochs} epochs (recipe lr "
              f"{recipe.retrain.lr}; batch norm then recalibrated on "
              f"{bench.nas.calibration_batches} training batches, as the search does), seeds "
              f"{list(mode.seeds)} = init + training order"
              + ("; **1 seed (quick mode)**" if seeds == 1 else ""))
    return row, details


def _spread(values: list[float]) -> str:
    return f"{statistics.stdev(values):.4f}" if len(values) > 1 else "-"


def random_search(bench: QualityBench) -> tuple[Row, list[str]]:
    """Row 6: candidates trained fully, one after another, for as long as our whole search took
    (a candidate starts only if the mean candidate time so far still fits; the first always
    does); the best on the held-out split is tested."""
    recipe, budget_s = bench.recipe, bench.search_seconds
    candidates, used = bench.random_search(budget_s, random.Random(recipe.seed + 6), recipe.seed,
                                           exclude=[bench.searched.sample])
    best = max(candidates, key=lambda c: (c.heldout, -c.macs))
    bench.test(best)
    ours = [r for r in bench.trained if r.name == "searched"]
    ours_seed = next(r for r in ours if r.seed == recipe.seed)
    details = ["## Row 6: the random search's candidates", "",
               "| candidate | MACs | held-out top-1 | seconds (train + score) |",
               "|---|---:|---:|---:|"]
    details += [f"| {c.name}{' (best)' if c is best else ''} | {c.macs:,} | {c.heldout:.4f} | "
                f"{c.seconds:.0f} |" for c in candidates]
    row = Row(QUALITY_FIGURES["6"],
              f"ours {ours_seed.test:.4f} vs best of {len(candidates)} {best.test:.4f} "
              f"(Δ {ours_seed.test - best.test:+.4f})",
              f"test top-1 with seed {recipe.seed}: ours (searched, {ours_seed.macs:,} MACs, "
              f"retrained; {_mean_spread([r.test for r in ours])} over row 4's seeds) vs the "
              f"random search's pick ({best.macs:,} MACs, held-out {best.heldout:.4f}); "
              f"{len(candidates)} candidates fully trained in {used:.0f} s of the {budget_s:.0f} s "
              f"our search took",
              f"budget = wall-clock of our whole search (supernet fit + cost table + evolution + "
              f"export); candidates uniform within {bench.budget} (seed {recipe.seed + 6}), each "
              f"{recipe.retrain.epochs} epochs from scratch, picked by held-out top-1; a "
              "candidate starts only if the mean candidate time so far still fits")
    return row, details


def ranking_fidelity(bench: QualityBench) -> tuple[Row, list[str]]:
    """Row 5b: every architecture trained with the recipe's seed (topped up with random ones to
    ``rank_archs``), its supernet-inherited held-out top-1 against its standalone one."""
    mode, recipe, nas = bench.mode, bench.recipe, bench.nas
    runs = {sample_key(r.sample): r for r in bench.trained if r.seed == recipe.seed}
    extra = bench.random_samples(max(0, mode.rank_archs - len(runs)),
                                 random.Random(recipe.seed + 5),
                                 exclude=[r.sample for r in runs.values()])
    for i, sample in enumerate(extra):
        run = bench.train(f"ranking {i + 1}", sample, recipe.seed, test=False)
        runs[sample_key(sample)] = run
    supernet, model, calibration = bench.model.net, bench.model, bench.calibration()
    inherited, standalone, details = [], [], []
    for run in runs.values():
        activate(supernet, run.sample, bench.space)
        recalibrate_batch_norm(supernet, model, calibration)
        inherited.append(top1_accuracy(model.eval(), bench.datamodule.val_dataloader()))
        standalone.append(run.heldout)
        details.append(f"| {run.name} | {run.macs:,} | {inherited[-1]:.4f} | {run.heldout:.4f} |")
    tau, p_value = kendalltau(inherited, standalone)
    details = ["## Row 5b: the Fashion-MNIST architectures ranked", "",
               "| architecture | MACs | held-out top-1, inherited | held-out top-1, standalone |",
               "|---|---:|---:|---:|", *details]
    row = Row(QUALITY_FIGURES["5b"], f"τ = {tau:.3f} (p = {p_value:.3f})",
              f"held-out top-1 over {len(runs)} architectures: inherited "
              f"{min(inherited):.3f}–{max(inherited):.3f}, standalone "
              f"{min(standalone):.3f}–{max(standalone):.3f}",
              f"Kendall τ-b; the architectures of rows 4 and 6 trained with seed {recipe.seed} "
              f"(the searched one included: it is the supernet's pick, so not a uniform draw) "
              f"plus {len(extra)} more uniform within the budget; inherited from row 4's "
              f"supernet ({mode.epochs} epochs), {nas.calibration_batches} batch-norm "
              f"calibration batches; standalone {mode.epochs} epochs from scratch")
    return row, details


def quality_rows(name: str, out_dir: Path, done=lambda row: row
                 ) -> tuple[list[Row], list[str], str]:
    """Rows 4, 6 and 5b in mode ``name``; detail sections; a header line describing the data."""
    mode = QUALITY_MODES[name]
    bench = QualityBench(mode, out_dir)
    bench.search()
    row4, details4 = quality(bench)
    row6, details6 = random_search(bench)
    row5, details5 = ranking_fidelity(bench)
    rows = [done(row4), done(row6), done(row5)]
    sizes, data = bench.datamodule.sizes, bench.recipe.data.kwargs
    header = (f"- Rows 4, 5b, 6: Fashion-MNIST (`{RECIPE.name}`: {data['img_size']}x"
              f"{data['img_size']}, batch {data['batch_size']}, space `{bench.recipe.space.name}` "
              f"with `{bench.recipe.space.kwargs}`, {bench.budget}), scaled down: "
              f"{sizes['train']} train / {sizes['heldout']} held-out / {sizes['test']} test "
              f"images (one test image = {1 / sizes['test']:.4f} top-1), {mode.epochs} epochs "
              f"for the supernet and every retraining, evolution {mode.population}×"
              f"{mode.generations}; our search took {bench.search_seconds:.0f} s "
              f"({bench.nas.result.cost['train_seconds']:.0f} s supernet training, "
              f"{bench.nas.result.cost['search_seconds']:.0f} s evolution)")
    return rows, details4 + [""] + details6 + [""] + details5, header
