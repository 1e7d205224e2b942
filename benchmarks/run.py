"""The benchmark suite: every figure a ratio (or a comparison) of things measured side by side in
one run on CPU, written (atomically) to ``benchmarks/RESULTS.md``: rows 1, 2, 3 and 5 on
scikit-learn's digits, rows 4, 5b and 6 on Fashion-MNIST (``benchmarks.bench_quality``; marked
as skipped, with how to get the data, where it is not installed).

    python -m benchmarks.run [--quick] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import logging
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from itertools import islice
from pathlib import Path

import lightning.pytorch as pl
import torch
from scipy.stats import kendalltau

from benchmarks.bench_costs import (
    BATCH,
    SPACES,
    THREADS,
    bench_sample_cost,
    cpu_model,
    cpu_seconds,
    interleaved_times,
    train_step,
    write_atomic,
)
from benchmarks.bench_quality import QUALITY_FIGURES, QUALITY_MODES, Row, quality_rows
from nas_aug import Architecture, Budget, build_subnet, load_architecture
from nas_aug.callbacks import OneShotNAS
from nas_aug.classifier import ImageClassifier
from nas_aug.data import DigitsDataModule
from nas_aug.data.fashion_mnist import read_fashion_mnist
from nas_aug.search_spaces import create_space
from nas_aug.strategies.evaluation import recalibrate_batch_norm, top1_accuracy
from nas_aug.supernet import activate, canonical_sample, extract_subnet, space_of

SEED = 0
SPACE = "mobilenet_tiny"
SPACE_KWARGS = dict(num_classes=10, **SPACES["8x8"][0])  # the digits recipe's space
SHAPE = SPACES["8x8"][1]
BUDGET = Budget(macs=600_000)  # the digits recipe's budget
CHANNELS_LAST = torch.channels_last


@dataclass(frozen=True)
class Mode:
    epochs: int  # rows 1 and 5: every Lightning fit (supernet and standalone) runs this many
    step_paths: int  # row 2: sampled paths, each timed in the supernet and standalone
    step_repeats: int  # row 2: timed steps per path and side, after step_warmup untimed ones
    step_warmup: int
    cost_samples: int  # row 3: random samples costed both ways
    rank_archs: int  # row 5: architectures within the budget, each trained from scratch


MODES = {"quick": Mode(epochs=10, step_paths=6, step_repeats=10, step_warmup=2,
                       cost_samples=20, rank_archs=10),
         "full": Mode(epochs=30, step_paths=20, step_repeats=20, step_warmup=3,
                      cost_samples=100, rank_archs=30)}  # 30 epochs: the digits recipe's


def fit(module: pl.LightningModule, datamodule, epochs: int, callbacks=()) -> None:
    """One CPU Lightning fit with no logger, progress bar or checkpoints."""
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=list(callbacks),
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, datamodule)


def train_standalone(arch: Architecture, datamodule, epochs: int) -> tuple[ImageClassifier, float]:
    """``arch`` rebuilt freshly initialised and trained for ``epochs``; with its seconds
    (building included)."""
    pl.seed_everything(SEED, verbose=False)
    start = time.perf_counter()
    module = ImageClassifier(build_subnet(arch, weights=False))
    fit(module, datamodule, epochs)
    return module, time.perf_counter() - start


def search_cost(mode: Mode, datamodule, export_dir: Path
                ) -> tuple[Row, ImageClassifier, OneShotNAS, Architecture]:
    """Row 1: the whole one-shot pipeline ÷ one standalone training of its winner."""
    pl.seed_everything(SEED, verbose=False)
    start = time.perf_counter()
    model = ImageClassifier(create_space(SPACE, **SPACE_KWARGS))
    nas = OneShotNAS(budget=BUDGET, export_dir=export_dir, overwrite=True, progress=False,
                     seed=SEED)
    fit(model, datamodule, mode.epochs, [nas])
    pipeline = time.perf_counter() - start
    arch = load_architecture(export_dir)
    _, standalone = train_standalone(arch, datamodule, mode.epochs)
    train, search = nas.result.cost["train_seconds"], nas.result.cost["search_seconds"]
    row = Row("1. Search cost", f"{pipeline / standalone:.2f}×",
              f"pipeline {pipeline:.1f} s (supernet training {train:.1f} s, search of "
              f"{len(nas.result.candidates)} candidates {search:.1f} s, cost table + export + "
              f"set-up {pipeline - train - search:.1f} s) ÷ standalone training of the winner "
              f"({arch.macs:,} MACs) {standalone:.1f} s",
              f"`OneShotNAS` (uniform sampling, {BUDGET}, default evolution) inside a {mode.epochs}"
              f"-epoch fit, search and export ÷ `build_subnet(arch, weights=False)` in "
              f"`ImageClassifier`, {mode.epochs}-epoch fit. Floor ≈ 1.0")
    return row, model, nas, arch


def step_overhead(mode: Mode) -> Row:
    """Row 2: a supernet training step with a sampled path active ÷ the same sub-network's
    step standalone (plain PyTorch loop, channels_last, AdamW both sides, interleaved)."""
    torch.manual_seed(SEED)
    net = create_space(SPACE, **SPACE_KWARGS).to(memory_format=CHANNELS_LAST).train()
    space, rng = space_of(net), random.Random(SEED)
    x = torch.randn(BATCH, *SHAPE).contiguous(memory_format=CHANNELS_LAST)
    y = torch.randint(0, 10, (BATCH,))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def supernet_step(path):
        activate(net, path, space)  # the callback does this before every training step
        train_step(net, optimizer, x, y)

    steps = {}
    for i in range(mode.step_paths):
        path = space.random(rng)
        sub = extract_subnet(net, path, x[:1]).to(memory_format=CHANNELS_LAST).train()
        steps["supernet", i] = functools.partial(supernet_step, path)
        steps["standalone", i] = functools.partial(
            train_step, sub, torch.optim.AdamW(sub.parameters(), lr=1e-3), x, y)
    times = interleaved_times(steps, mode.step_repeats, mode.step_warmup)
    median = {side: statistics.median(t for (s, _), ts in times.items() if s == side for t in ts)
              for side in ("supernet", "standalone")}
    per_path = [statistics.median(times["supernet", i]) / statistics.median(times["standalone", i])
                for i in range(mode.step_paths)]
    return Row("2. Step overhead", f"{median['supernet'] / median['standalone']:.2f}×",
               f"supernet {median['supernet'] * 1e3:.1f} ms ÷ standalone "
               f"{median['standalone'] * 1e3:.1f} ms (median step); per path "
               f"{min(per_path):.2f}×–{max(per_path):.2f}×",
               f"{mode.step_paths} uniform paths × {mode.step_repeats} steps each side (after "
               f"{mode.step_warmup} warm-up), batch {BATCH}; supernet step includes `activate`; "
               "standalone = `extract_subnet`")


def cost_lookup(mode: Mode) -> Row:
    """Row 3: a sample's cost by ``CostTable`` look-up ÷ by ``extract_subnet`` + fvcore."""
    net = create_space(SPACE, **SPACE_KWARGS)
    _, c = bench_sample_cost(net, SHAPE, mode.cost_samples, SEED)
    exact = mode.cost_samples - len(c["mismatches"])
    return Row("3. Cost table vs fvcore",
               f"{c['fvcore'] / c['table']:,.0f}× faster; exact {exact}/{mode.cost_samples}",
               f"extract + fvcore {c['fvcore'] * 1e3:.1f} ms ÷ look-up {c['table'] * 1e6:.0f} µs "
               f"(median per sample); table == fvcore (MACs and params) on {exact} of "
               f"{mode.cost_samples} samples; table build once {c['build']:.2f} s",
               "`benchmarks.bench_costs.bench_sample_cost`, seeded uniform samples")


def ranking_fidelity(mode: Mode, model: ImageClassifier, nas: OneShotNAS, arch: Architecture,
                     datamodule) -> tuple[Row, list[str]]:
    """Row 5: Kendall tau between held-out accuracy with supernet-inherited weights (batch norm
    recalibrated) and held-out accuracy after training from scratch, over architectures
    sampled uniformly within the budget; also a detail line per architecture."""
    supernet, space, table = model.net, nas.space, nas.cost_table
    rng, samples = random.Random(SEED + 1), {}
    while len(samples) < mode.rank_archs:
        sample = canonical_sample(supernet, space.random(rng), space)
        if BUDGET.allows(table(sample)):
            samples.setdefault(tuple(sorted(sample.items())), sample)
    calibration = [x for x, _ in islice(datamodule.train_dataloader(), nas.calibration_batches)]
    inherited, standalone, details = [], [], []
    for sample in samples.values():
        activate(supernet, sample, space)
        recalibrate_batch_norm(supernet, model, calibration)
        inherited.append(top1_accuracy(model.eval(), datamodule.val_dataloader()))
        trained, _ = train_standalone(dataclasses.replace(arch, sample=sample), datamodule,
                                      mode.epochs)
        standalone.append(top1_accuracy(trained.eval(), datamodule.val_dataloader()))
        details.append(f"| {table(sample).macs:,} | {inherited[-1]:.4f} | {standalone[-1]:.4f} |")
    tau, p_value = kendalltau(inherited, standalone)
    row = Row("5. Ranking fidelity", f"τ = {tau:.3f} (p = {p_value:.3f})",
              f"held-out top-1 over {len(samples)} architectures: inherited "
              f"{min(inherited):.3f}–{max(inherited):.3f}, standalone "
              f"{min(standalone):.3f}–{max(standalone):.3f}",
              f"Kendall τ-b (scipy); inherited from row 1's supernet ({mode.epochs} epochs), "
              f"{nas.calibration_batches} batch-norm calibration batches; standalone "
              f"{mode.epochs} epochs from scratch each; {BUDGET}")
    return row, details


def fashion_mnist_missing() -> str | None:
    """Why Fashion-MNIST cannot be read here, with how to get it; ``None`` when it can."""
    try:
        read_fashion_mnist()
    except FileNotFoundError as err:
        return str(err)
    return None


def render(rows: list[Row], details: list[str], sections: list[str], header: list[str]) -> str:
    table = ["| figure | value | raw numbers (same run) | how |", "|---|---:|---|---|"]
    table += [f"| {r.figure} | {r.value} | {r.raw} | {r.how} |"
              for r in sorted(rows, key=lambda r: r.figure)]
    detail = ["## Row 5: the architectures ranked", "",
              "| MACs | held-out top-1, inherited | held-out top-1, standalone |",
              "|---:|---:|---:|", *details] if details else []
    return "\n".join(["# Benchmark results", "", *header, "", *table, "", *detail, "",
                      *sections, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, paths and samples")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args()
    name = "quick" if args.quick else "full"
    mode = MODES[name]
    warnings.filterwarnings("ignore", message=".*torch.jit.*is deprecated.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(THREADS)
    start, (busy0, own0) = time.perf_counter(), cpu_seconds()
    datamodule = DigitsDataModule(batch_size=BATCH, seed=SEED)

    def done(row: Row) -> Row:
        print(f"[{time.perf_counter() - start:6.0f} s] {row.figure}: {row.value}  ({row.raw})",
              flush=True)
        return row

    with tempfile.TemporaryDirectory() as export_dir:
        row1, model, nas, arch = search_cost(mode, datamodule, Path(export_dir))
        rows = [done(row1), done(step_overhead(mode)), done(cost_lookup(mode))]
        row5, details = ranking_fidelity(mode, model, nas, arch, datamodule)
        rows.append(done(row5))
    missing = fashion_mnist_missing()
    if missing is None:
        with tempfile.TemporaryDirectory() as out_dir:
            quality, sections, fashion = quality_rows(name, Path(out_dir), done)
    else:  # the digits rows stand alone; the others say how to get their data
        quality = [done(Row(figure, "skipped", "Fashion-MNIST is not installed",
                            "`make data` installs it (see the header)"))
                   for figure in QUALITY_FIGURES.values()]
        sections, fashion = [], f"- Rows 4, 5b, 6: skipped, Fashion-MNIST is missing: {missing}"
    rows += quality

    total = time.perf_counter() - start
    busy, own = cpu_seconds()
    others = max(0.0, (busy - busy0) - (own - own0))
    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(mode).items())
    settings += "; Fashion-MNIST: " + ", ".join(
        f"{k}={v}" for k, v in dataclasses.asdict(QUALITY_MODES[name]).items())
    sizes = datamodule.sizes
    header = [
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; mode: **{name}** "
        f"({settings}); suite wall time **{total:.0f} s**",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores), "
        f"**torch.set_num_threads({THREADS})**; Python {platform.python_version()}, "
        f"torch {torch.__version__}, lightning {version('lightning')}, timm {version('timm')}, "
        f"fvcore {version('fvcore')}, scipy {version('scipy')}",
        f"- Other processes used {others:.0f} CPU-s during the run ({others / total:.2f} cores "
        "on average): they skew timings; side-by-side ratios resist, but do not remove, that"
        + (". **Load was high: rerun on a quiet machine**" if others > 0.25 * total else ""),
        f"- Rows 1, 2, 3, 5: scikit-learn's digits ({sizes['train']} train / "
        f"{sizes['heldout']} held-out images; one held-out image = "
        f"{1 / sizes['heldout']:.4f} top-1), batch {BATCH}. "
        f"Space: `{SPACE}` with `{SPACE_KWARGS}`. Seed {SEED} everywhere (`pl.seed_everything` "
        "before every fit, data split, path sampling, search)",
        fashion,
        "- Each figure is a ratio (or a comparison) of things measured side by side in this run; "
        "the numbers it comes from are beside it",
    ]
    write_atomic(args.out, render(rows, details, sections, header))
    print(f"written to {args.out} in {total:.0f} s")


if __name__ == "__main__":
    main()
