"""DADA's settings side by side on the tasks of ``bench_augment_quality``: each setting's test
top-1 in the fit and retrained with each export form, its cost over a plain fit, and how far
its parameters moved; 3 seeds.

    python -m benchmarks.bench_dada_settings [--tasks digits,fashion,orientation] [--seeds 3]
        [--decays 0,1,4] [--out FILE]

A setting is ``DadaSearch``'s defaults with ``prior_decay`` set. Each setting's policy is
retrained twice: as the fit's distribution (the default export) and as DADA's 25 most probable
sub-policies (``top_k=25``). "moved" is the mean over seeds of the largest ``|p - 0.5|`` of any
op's probability and the largest op weight over the uniform one (``max w x n_ops``).
Written to ``benchmarks/results/augment_dada_settings.md``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from benchmarks.bench_augment_quality import TASKS, fit_and_test, found
from benchmarks.bench_costs import cpu_seconds, write_atomic
from nas_aug.data.fashion_mnist import DEFAULT_ROOT

OUT = Path(__file__).parent / "results" / "augment_dada_settings.md"


def mean_range(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def section_head(name: str, seeds: int, started: float, cpu_before: tuple[float, float],
                 plain: list) -> list[str]:
    """A task section's heading and its line on the time taken since ``started``, the CPU
    other processes used since ``cpu_before`` (``cpu_seconds()``) and the ``plain`` fits."""
    task = TASKS[name]
    (busy, own), (busy_after, own_after) = cpu_before, cpu_seconds()
    minutes = (time.perf_counter() - started) / 60
    others = (busy_after - busy) - (own_after - own)
    return [f"## {name}: {task.about}", "",
            f"{datetime.date.today()}, {minutes:.0f} min; other processes used {others:.0f} "
            f"CPU-s meanwhile ({others / (minutes * 60):.2f} cores: above about 0.1 the cost "
            f"column is skewed). {task.epochs} epochs, seeds 0..{seeds - 1}; none (no "
            f"augmentation): {mean_range([a for a, _, _ in plain])}.", ""]


def run_task(name: str, seeds: int, decays: list[float]) -> list[str]:
    task = TASKS[name]
    started, (busy, own) = time.perf_counter(), cpu_seconds()
    plain = [fit_and_test(task, seed, task.epochs) for seed in range(seeds)]
    base = statistics.mean(seconds for _, seconds, _ in plain)
    rows = []
    for decay in decays:
        fit, distribution, top, seconds, moved, heaviest = [], [], [], [], [], []
        for seed in range(seeds):
            accuracy, spent, callback = fit_and_test(task, seed, task.epochs, search="dada",
                                                     prior_decay=decay)
            method = callback.method
            table = method.policy.op_table()
            fit.append(accuracy)
            seconds.append(spent)
            moved.append(max(abs(p - 0.5) for p in table["probability"]))
            heaviest.append(max(table["weight"]) * len(table["weight"]))
            distribution.append(fit_and_test(task, seed, task.epochs, found(callback))[0])
            top.append(fit_and_test(task, seed, task.epochs,
                                    method.policy.to_policy(top_k=25))[0])
            print(f"{name} seed {seed} decay {decay}: fit {accuracy:.4f}, retrained "
                  f"{distribution[-1]:.4f} / {top[-1]:.4f}", flush=True)
        rows.append(f"| {decay:g} | {mean_range(fit)} | {mean_range(distribution)} | "
                    f"{mean_range(top)} | "
                    f"{statistics.mean(seconds) / base:.2f}x | {statistics.mean(moved):.3f} | "
                    f"{statistics.mean(heaviest):.2f} |")
    return [*section_head(name, seeds, started, (busy, own), plain),
            "| prior_decay | in the fit | retrained, distribution | retrained, top 25 | cost "
            "| max \\|p - 0.5\\| | max weight x n_ops |", "|---:|---:|---:|---:|---:|---:|---:|",
            *rows, ""]


def run_sections(out: Path, names: list[str], run, header: list[str]) -> None:
    """Write ``header`` and a section per task to ``out``: ``run(name)`` for each of ``names``
    (a task that needs Fashion-MNIST where it is missing exits with a message), and the
    sections of other tasks already in ``out`` as they were."""
    sections: dict[str, list[str]] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            if line.startswith("## "):
                current = sections.setdefault(line[3:].split(":")[0], [])
            if sections:
                current.append(line)
    for name in names:
        if TASKS[name].needs_fashion_mnist and not Path(DEFAULT_ROOT).is_dir():
            sys.exit(f"task {name!r} needs Fashion-MNIST in {DEFAULT_ROOT} (make data)")
        sections[name] = run(name)
    ordered = [sections[name] for name in TASKS if name in sections]
    write_atomic(out, "\n".join(header + [line for lines in ordered for line in lines]))
    print(f"written to {out}")


def settings_main(doc: str, module: str, out: Path, flag: str, default: str, title: str,
                  about: str, run_task) -> None:
    """The command line of a settings bench: ``--tasks``, ``--seeds``, ``--<flag>`` (the
    setting's values, comma-separated) and ``--out``; each task's section is
    ``run_task(name, seeds, values)``, written below a header of ``title`` and ``about``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(f"--{flag}", default=default)
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args()
    torch.set_num_threads(2)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    names = [name for name in args.tasks.split(",") if name]
    if unknown := [name for name in names if name not in TASKS]:
        parser.error(f"unknown task(s) {unknown}; tasks are {list(TASKS)}")
    values = [float(value) for value in getattr(args, flag).split(",")]
    header = [f"# {title}", "",
              "The fixed 3-conv network and tasks of `bench_augment_quality.py`, 2 CPU threads; "
              f"{about} Cost: the fit's seconds over a plain fit's. Reproduce a task's section "
              f"with `python -m benchmarks.{module} --tasks <task>`; a run replaces the "
              "sections of the tasks it runs and keeps the others.", ""]
    run_sections(args.out, names, lambda name: run_task(name, args.seeds, values), header)


if __name__ == "__main__":
    settings_main(__doc__, "bench_dada_settings", OUT, "decays", "0,1,4",
                  "DADA's settings: the prior decay and the export form",
                  "`DadaSearch` defaults but `prior_decay` (at most 1 / prior_decay of the way "
                  "from the start for a consistent hypergradient).", run_task)
