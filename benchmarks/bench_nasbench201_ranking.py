"""How well a trained SPOS supernet ranks the architectures of the ``nasbench201`` table, and
what the whole ``OneShotNAS`` pipeline picks: results/nasbench201_ranking.{csv,md}.

For each supernet-training option (``uniform``: ``SPOS(sampling="uniform")``, ``sandwich``:
``SPOS(sampling="sandwich")``, ``sandwich+distill``: the sandwich rule with in-place
distillation, ``distill_weight=1.0``; ``attentive`` and ``attentive+distill``: the same with
the random path the worst of 3 by the batch loss, ``SPOS(sampling="attentive")``) and seed,
the supernet of the table's space
(``bench_nasbench201_table.space_kwargs(3)``: 125 architectures) is trained on the table's
10,000 training images by a Lightning fit with ``Trainer(callbacks=[OneShotNAS(...)])``: the
table's optimizer and schedule (SGD, Nesterov 0.9, lr 0.1 cosine per step, weight decay 5e-4,
batch 256) stretched over ``--epochs`` (6: twice the table's 3), the table's held-out split as
``heldout=``, a MACs budget at the table's median. The search and export at the end of the fit
is the pipeline's pick; its regret is the best seed-mean test top-1 of the table within the
budget minus the pick's. Then every architecture is scored with the trained weights by the
callback's own scoring (``OneShotNAS._scoring``: activate, recalibrate batch norm on the
callback's calibration batches, held-out top-1), and Kendall tau-b and Spearman rho between
those inherited scores and the table's seed-mean standalone held-out and test top-1 are
reported, over all architectures and the non-degenerate ones, next to the ceiling (the table's
seed 0 against seed 1) and to MACs and params as rankers.

The CSV holds one row per (option, seed, architecture), written once per (option, seed): a run
skips the pairs already complete there, so it resumes. The markdown is rebuilt from the CSV.

    .venv/bin/python -m benchmarks.bench_nasbench201_ranking [--options uniform sandwich]
        [--seeds 0 1] [--epochs 6] [--smoke]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau, spearmanr
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.bench_costs import THREADS, cpu_model, cpu_seconds, write_atomic
from benchmarks.bench_nasbench201_table import (
    BATCH,
    HELDOUT,
    all_samples,
    space_kwargs,
    to_tensors,
    write_rows,
)
from nas_aug import Budget, load_architecture
from nas_aug.callbacks import OneShotNAS
from nas_aug.constraints import Cost
from nas_aug.data.fashion_mnist import DEFAULT_ROOT, read_fashion_mnist
from nas_aug.search_spaces import create_space
from nas_aug.search_spaces.nasbench201 import arch_string
from nas_aug.strategies import SPOS

RESULTS = Path(__file__).resolve().parent / "results"
TABLE = RESULTS / "nasbench201_table.csv"
OPTIONS: dict[str, dict] = {
    "uniform": dict(sampling="uniform"),
    "sandwich": dict(sampling="sandwich"),
    "sandwich+distill": dict(sampling="sandwich", distill_weight=1.0),
    "attentive": dict(sampling="attentive"),
    "attentive+distill": dict(sampling="attentive", distill_weight=1.0),
}
COLUMNS = ("option", "seed", "arch", "macs", "params", "inherited_heldout_top1",
           "search_heldout_top1", "picked", "train_seconds", "search_seconds")
NODES, TRAIN_SIZE, EPOCHS = 3, 10_000, 6
DEGENERATE = 0.2  # seed-mean standalone test top-1 at or below this: a degenerate architecture


@dataclass(frozen=True)
class Mode:
    train_size: int
    heldout_size: int
    archs: int | None  # architectures scored after the fit (None: all)
    population: int | None  # evolution's (None: OneShotNAS's default)
    generations: int | None


FULL = Mode(TRAIN_SIZE, HELDOUT.stop - HELDOUT.start, None, None, None)
SMOKE = Mode(512, 500, 5, 4, 2)


class SupernetClassifier(pl.LightningModule):
    """Cross-entropy with the table's optimizer and schedule (SGD Nesterov 0.9, lr 0.1,
    weight decay 5e-4, cosine over every step of the fit)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                    weight_decay=5e-4)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@dataclass
class Standalone:
    """The ground-truth table, per architecture: cost, and top-1 per seed."""

    macs: dict[str, int]
    params: dict[str, int]
    heldout: dict[str, dict[int, float]]
    test: dict[str, dict[int, float]]

    @classmethod
    def read(cls, path: Path) -> Standalone:
        table = cls({}, {}, {}, {})
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                arch, seed = row["arch"], int(row["seed"])
                table.macs[arch], table.params[arch] = int(row["macs"]), int(row["params"])
                table.heldout.setdefault(arch, {})[seed] = float(row["heldout_top1"])
                table.test.setdefault(arch, {})[seed] = float(row["test_top1"])
        return table

    def mean(self, metric: str, arch: str) -> float:
        return statistics.mean(getattr(self, metric)[arch].values())

    def budget(self) -> Budget:
        return Budget(macs=int(statistics.median(self.macs.values())))

    def within(self, budget: Budget) -> list[str]:
        return [a for a in self.macs if budget.allows(Cost(self.macs[a], self.params[a]))]


# ---- the fit and the scoring -----------------------------------------------------------------
def loaders(mode: Mode, root: str) -> tuple[DataLoader, DataLoader]:
    """The table's training images (shuffled, batch 256) and its held-out split."""
    arrays = read_fashion_mnist(root)
    train = TensorDataset(*to_tensors(arrays.images[:mode.train_size],
                                      arrays.labels[:mode.train_size]))
    held = slice(HELDOUT.start, HELDOUT.start + mode.heldout_size)
    heldout = TensorDataset(*to_tensors(arrays.images[held], arrays.labels[held]))
    return (DataLoader(train, batch_size=BATCH, shuffle=True),
            DataLoader(heldout, batch_size=1000))


def evolution(mode: Mode) -> dict[str, int]:
    """``OneShotNAS``'s evolution options in ``mode`` (none: its defaults)."""
    return {key: value for key, value in (("population_size", mode.population),
                                          ("generations", mode.generations)) if value}


def fit_and_score(option: str, seed: int, epochs: int, mode: Mode, budget: Budget,
                  data: tuple[DataLoader, DataLoader], export_dir: Path) -> list[dict]:
    """The supernet fit with ``OneShotNAS`` (the pipeline's pick exported to ``export_dir``),
    then every architecture (``mode.archs`` of them and the pick in a smoke run) scored by the
    callback's own scoring: the CSV rows of this pair."""
    train, heldout = data
    pl.seed_everything(seed, verbose=False)
    model = SupernetClassifier(create_space("nasbench201", **space_kwargs(NODES)))
    nas = OneShotNAS(budget=budget, strategy=SPOS(**OPTIONS[option]), heldout=heldout,
                     export_dir=export_dir, overwrite=True, seed=seed, progress=False,
                     **evolution(mode))
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[nas],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, train_dataloaders=train)
    picked = arch_string(load_architecture(export_dir).sample)
    searched = {arch_string(c.sample): c.score for c in nas.result.candidates}
    scoring, _ = nas._scoring(trainer, model, None, {})  # the function the search scored with
    samples = all_samples(nas.space)
    if mode.archs:
        chosen = random.Random(0).sample(range(len(samples)), mode.archs)
        samples = [s for i, s in enumerate(samples) if i in chosen or arch_string(s) == picked]
    seconds = {key: f"{nas.result.cost[key]:.1f}" for key in ("train_seconds", "search_seconds")}
    rows = []
    for sample in samples:
        arch, cost = arch_string(sample), nas.cost_table(sample)
        rows.append({"option": option, "seed": seed, "arch": arch, "macs": cost.macs,
                     "params": cost.params,
                     "inherited_heldout_top1": f"{scoring.evaluate(sample):.4f}",
                     "search_heldout_top1": f"{searched[arch]:.4f}" if arch in searched else "",
                     "picked": int(arch == picked), **seconds})
    return rows


# ---- the CSV ---------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, str]]:
    """Every row of ``path`` (``search_heldout_top1`` is empty where the search did not score
    the architecture, so rows are not checked for completeness: runs are, by ``runs_of``)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def runs_of(rows: list[dict[str, str]]) -> dict[tuple[str, int], list[dict[str, str]]]:
    runs: dict[tuple[str, int], list[dict[str, str]]] = {}
    for row in rows:
        runs.setdefault((row["option"], int(row["seed"])), []).append(row)
    return runs


# ---- the statistics ------------------------------------------------------------------------
Ranker = Callable[[str], float]
METRICS = ("held-out", "test")
SUBSETS = ("all", "non-deg.")
HEADS = [(stat, metric, subset) for stat in ("τ", "ρ") for metric in METRICS for subset in SUBSETS]


@dataclass
class Line:
    """One ranker's row: ``cells[(statistic, metric, subset)]`` holds one value per seed."""

    name: str
    cells: dict[tuple[str, str, str], list[float]]
    regret: list[float] | None = None
    seconds: str = ""


def line(name: str, rankers: dict[str, list[Ranker]], targets: dict[str, Ranker],
         subsets: dict[str, list[str]]) -> Line:
    """Kendall tau-b and Spearman rho between each of ``rankers[metric]`` (one per seed) and
    ``targets[metric]``, over each subset of architectures."""
    cells: dict[tuple[str, str, str], list[float]] = {}
    for metric in METRICS:
        for subset, archs in subsets.items():
            y = [targets[metric](a) for a in archs]
            for ranker in rankers[metric]:
                x = [ranker(a) for a in archs]
                cells.setdefault(("τ", metric, subset), []).append(kendalltau(x, y).statistic)
                cells.setdefault(("ρ", metric, subset), []).append(spearmanr(x, y).statistic)
    return Line(name, cells)


def option_line(option: str, runs: dict, table: Standalone, subsets: dict[str, list[str]],
                budget: Budget) -> tuple[Line, list[str]]:
    """The option's correlations and regrets over its seeds, and a table row per pick."""
    best = best_within(table, budget)
    scores, regrets, picks, train_s, search_s = [], [], [], [], []
    for seed in sorted(seed for opt, seed in runs if opt == option):
        rows = runs[(option, seed)]
        scores.append({row["arch"]: float(row["inherited_heldout_top1"]) for row in rows})
        pick = next(row for row in rows if row["picked"] == "1")
        regrets.append(best - table.mean("test", pick["arch"]))
        train_s.append(float(pick["train_seconds"]))
        search_s.append(float(pick["search_seconds"]))
        searched = [row for row in rows if row["search_heldout_top1"]]
        agree = sum(row["search_heldout_top1"] == row["inherited_heldout_top1"]
                    for row in searched)
        score = scores[-1]
        top = max((a for a in table.within(budget) if a in score),
                  key=lambda a, score=score: (score[a], -table.macs[a], -table.params[a]))
        picks.append(
            f"| {option} | {seed} | {cell(pick['arch'])} | {int(pick['macs']):,} | "
            f"{score[pick['arch']]:.4f} | {table.mean('test', pick['arch']):.4f} | "
            f"{regrets[-1]:+.4f} | {len(searched)} ({agree} equal) | {cell(top)} "
            f"({best - table.mean('test', top):+.4f}) | {train_s[-1]:.0f} + {search_s[-1]:.0f} |")
    scored = {subset: [a for a in archs if all(a in score for score in scores)]
              for subset, archs in subsets.items()}
    rankers = [score.__getitem__ for score in scores]
    result = line(option, {metric: rankers for metric in METRICS}, standalone_targets(table),
                  scored)
    result.regret = regrets
    result.seconds = f"{statistics.mean(train_s):.0f} + {statistics.mean(search_s):.0f}"
    return result, picks


def cell(arch: str) -> str:
    """An arch string as code in a markdown table cell (its pipes escaped)."""
    return "`" + arch.replace("|", "\\|") + "`"


def standalone_targets(table: Standalone) -> dict[str, Ranker]:
    return {"held-out": lambda a: table.mean("heldout", a),
            "test": lambda a: table.mean("test", a)}


def best_within(table: Standalone, budget: Budget) -> float:
    """The best seed-mean standalone test top-1 within ``budget``."""
    return max(table.mean("test", a) for a in table.within(budget))


def tau_share(row: Line, ceiling: Line, subset: str) -> float:
    return (statistics.mean(row.cells[("τ", "held-out", subset)])
            / ceiling.cells[("τ", "held-out", subset)][0])


def render_line(row: Line, ceiling: Line) -> str:
    cells = [mean_and_seeds(row.cells[head]) for head in HEADS]
    share = " / ".join(f"{tau_share(row, ceiling, subset):.0%}" for subset in SUBSETS)
    regret = "" if row.regret is None else \
        f"{' / '.join(f'{r:+.4f}' for r in row.regret)} (mean {statistics.mean(row.regret):+.4f})"
    return f"| {row.name} | {' | '.join(cells)} | {share} | {regret} | {row.seconds} |"


def mean_and_seeds(values: list[float]) -> str:
    """The mean of one value per seed, the values in brackets."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def verdict(lines: list[Line], ceiling: Line, default: str) -> str:
    row = next((r for r in lines if r.name == default), None)
    target = (f"Target (τ held-out ≥ 0.6 and ≥ 80% of the ceiling's, for the default "
              f"training: `SPOS()` samples `{default}`)")
    if row is None:
        return f"{target}: not measured in this run."
    parts = [(subset, statistics.mean(row.cells[("τ", "held-out", subset)]),
              tau_share(row, ceiling, subset)) for subset in SUBSETS]
    met = {subset: tau >= 0.6 and share >= 0.8 for subset, tau, share in parts}
    said = "; ".join(f"{subset}: τ {tau:.3f}, {share:.0%} of the ceiling, "
                     f"{'met' if met[subset] else 'NOT met'}" for subset, tau, share in parts)
    return f"**{target}: {'met' if all(met.values()) else 'NOT met'}** ({said})."


# ---- the report ------------------------------------------------------------------------------
def report(rows: list[dict[str, str]], table: Standalone, header: list[str],
           default: str) -> str:
    runs, budget = runs_of(rows), table.budget()
    archs = sorted(table.macs)
    non_degenerate = [a for a in archs if table.mean("test", a) > DEGENERATE]
    subsets = {"all": archs, "non-deg.": non_degenerate}
    ceiling = line("ceiling: table seed 0 vs seed 1",
                   {"held-out": [lambda a: table.heldout[a][0]],
                    "test": [lambda a: table.test[a][0]]},
                   {"held-out": lambda a: table.heldout[a][1],
                    "test": lambda a: table.test[a][1]}, subsets)
    lines, picks = [], []
    for option in (o for o in OPTIONS if any(opt == o for opt, _ in runs)):
        result, option_picks = option_line(option, runs, table, subsets, budget)
        lines.append(result)
        picks += option_picks
    costs = [("MACs (largest network)", table.macs), ("params", table.params)]
    lines += [line(name, {metric: [cost.__getitem__] for metric in METRICS},
                   standalone_targets(table), subsets) for name, cost in costs]
    heads = " | ".join(f"{stat} {metric}, {subset}" for stat, metric, subset in HEADS)
    return "\n".join([
        "# Ranking fidelity of the SPOS supernet on the `nasbench201` table (Fashion-MNIST)", "",
        *header, "",
        "## Rank correlation with standalone training, and the pipeline's regret", "",
        "τ = Kendall τ-b, ρ = Spearman (scipy.stats), between the ranker and the table's "
        "seed-mean standalone top-1 (held-out, test); options: mean over seeds (per seed in "
        f"brackets). all = the {len(archs)} architectures, non-deg. = the "
        f"{len(non_degenerate)} with seed-mean standalone test top-1 > {DEGENERATE}. The "
        "ceiling row is the table's seed 0 against its seed 1 (held-out against held-out, "
        "test against test). % of ceiling = mean τ held-out ÷ the ceiling's τ held-out, all / "
        "non-deg. Regret = the best seed-mean test top-1 in the table within "
        f"{budget} ({best_within(table, budget):.4f}, {len(table.within(budget))} "
        "architectures) − the pick's seed-mean test top-1, per seed. Fit s = supernet "
        "training + search and export (mean over seeds; informational, the machine was "
        "shared).", "",
        f"| ranker | {heads} | % of ceiling | pipeline regret (per seed) | fit s |",
        "|---|" + "---:|" * (len(HEADS) + 3),
        *(render_line(row, ceiling) for row in [*lines, ceiling]), "",
        verdict(lines, ceiling, default), "",
        "## The pipeline's picks", "",
        "Held-out = the inherited score the search saw; test = the table's seed-mean "
        "standalone test top-1. Searched = architectures the evolution scored (in brackets, "
        "how many of its scores equal this benchmark's re-scoring with the same function); "
        "exhaustive pick = the best inherited score among every architecture within the "
        "budget (ties: the cheapest, as the search breaks them), its regret in brackets.", "",
        "| option | seed | pick | MACs | held-out (inherited) | test (table) | regret | "
        "searched | exhaustive pick (regret) | train + search s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|",
        *picks, "",
    ])


def header_lines(args: argparse.Namespace, mode: Mode, budget: Budget, nas: OneShotNAS,
                 wall: float, others: float) -> list[str]:
    command = "cd /work/main && .venv/bin/python -m benchmarks.bench_nasbench201_ranking" + \
        "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    kind = "smoke run: tiny data, numbers meaningless" if args.smoke else "full"
    stretch = " (2x the table's 3: the supernet's steps are shared among its paths)" \
        if args.epochs == 2 * 3 else ""
    return [
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; this invocation "
        f"{wall:.0f} s wall ({kind})",
        f"- torch {torch.__version__}, lightning {lightning.__version__}, Python "
        f"{platform.python_version()}, CPU: {cpu_model()} ({os.cpu_count()} logical cores), "
        f"**torch.set_num_threads({THREADS})**",
        f"- The machine was shared: other agents were running test suites concurrently (other "
        f"processes used {others:.0f} CPU-s during this invocation, {others / wall:.2f} cores on "
        "average). These are accuracy figures, not timings, so the load does not bias them; "
        "only the fit seconds are affected",
        f"- Space: `nasbench201` with `{space_kwargs(NODES)}` (125 architectures); ground truth "
        f"`{TABLE.relative_to(RESULTS.parent.parent)}` (3 epochs standalone, seeds 0 and 1)",
        f"- Supernet fit: the first {mode.train_size:,} Fashion-MNIST training images, "
        f"{args.epochs} epochs{stretch}, SGD Nesterov 0.9, lr 0.1 cosine per step, weight "
        f"decay 5e-4, batch {BATCH}, `seed_everything(seed)` (init and data order); "
        f"`OneShotNAS(budget={budget}, heldout=<training images {HELDOUT.start:,}-"
        f"{HELDOUT.start + mode.heldout_size - 1:,}>, seed=seed)` (the table's median MACs) "
        "with its defaults otherwise: evolution "
        f"{nas.search.population_size}x{nas.search.generations}, "
        f"{nas.calibration_batches} calibration batches of {BATCH}",
        "- Inherited score: `OneShotNAS._scoring(...).evaluate` after the fit (activate, "
        "`recalibrate_batch_norm` on the callback's calibration batches, held-out top-1 on "
        f"the {mode.heldout_size:,} held-out images), the function the search itself scores with",
        f"- Reproduce: `{command}` (resumes from the CSV; delete "
        f"`{args.out.name}` to start afresh)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS), default=list(OPTIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny: 512 images, 1 epoch, 5 architectures, into /tmp")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path, default=RESULTS / "nasbench201_ranking.csv")
    args = parser.parse_args()
    mode = SMOKE if args.smoke else FULL
    if args.smoke:
        args.epochs = 1
        args.out = Path(tempfile.gettempdir()) / "nasbench201_ranking_smoke.csv"
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.set_num_threads(THREADS)
    started, (busy0, own0) = time.perf_counter(), cpu_seconds()

    table = Standalone.read(TABLE)
    budget = table.budget()
    data = loaders(mode, args.root)
    rows = read_rows(args.out)
    done = runs_of(rows)
    for option in args.options:
        for seed in args.seeds:
            if (option, seed) in done:
                print(f"{option} seed {seed}: in {args.out}, skipped", flush=True)
                continue
            t0 = time.perf_counter()
            export_dir = Path(tempfile.gettempdir()) / "nasbench201_ranking" / f"{option}_{seed}"
            rows += fit_and_score(option, seed, args.epochs, mode, budget, data, export_dir)
            write_rows(args.out, rows, COLUMNS)
            print(f"{option} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - started
    busy, own = cpu_seconds()
    header = header_lines(args, mode, budget, OneShotNAS(**evolution(mode)), wall,
                          max(0.0, (busy - busy0) - (own - own0)))
    text = report(read_rows(args.out), table, header, SPOS().sampling)
    write_atomic(args.out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
