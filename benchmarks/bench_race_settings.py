"""The RandAugment race's probing schedule side by side on the tasks of
``bench_augment_quality``: test top-1 in the fit and retrained with the policy found, the fit's
cost over a plain fit's, and the picks; 3 seeds.

    python -m benchmarks.bench_race_settings [--tasks digits,fashion,orientation] [--seeds 3]
        [--growths 0,0.5,1] [--out FILE]

A setting is ``RandAugmentSearch``'s defaults with ``probe_growth`` set: with ``n`` of the
``c`` candidates left, one probe every ``probe_every * (c / n) ** probe_growth`` steps.
Written to ``benchmarks/results/augment_race_settings.md``; a run replaces only the sections
of the tasks it runs.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import logging
import statistics
import time
import warnings
from pathlib import Path

import torch

from benchmarks.bench_augment_quality import TASKS, describe, fit_and_test, found
from benchmarks.bench_costs import cpu_seconds
from benchmarks.bench_dada_settings import mean_range, run_sections

OUT = Path(__file__).parent / "results" / "augment_race_settings.md"


def run_task(name: str, seeds: int, growths: list[float]) -> list[str]:
    task = TASKS[name]
    started, (busy, own) = time.perf_counter(), cpu_seconds()
    plain = [fit_and_test(task, seed, task.epochs) for seed in range(seeds)]
    base = statistics.mean(seconds for _, seconds, _ in plain)
    rows = []
    for growth in growths:
        fit, retrained, seconds, picks = [], [], [], []
        for seed in range(seeds):
            accuracy, spent, callback = fit_and_test(task, seed, task.epochs,
                                                     search="randaugment", probe_growth=growth)
            policy = found(callback)
            fit.append(accuracy)
            seconds.append(spent)
            picks.append(describe(policy))
            retrained.append(fit_and_test(task, seed, task.epochs, policy)[0])
            print(f"{name} seed {seed} growth {growth}: fit {accuracy:.4f}, retrained "
                  f"{retrained[-1]:.4f}, {spent / base:.2f}x ({picks[-1]})", flush=True)
        counted = ", ".join(f"{pick} x{count}" if count > 1 else pick
                            for pick, count in collections.Counter(picks).most_common())
        rows.append(f"| {growth:g} | {mean_range(fit)} | {mean_range(retrained)} | "
                    f"{statistics.mean(seconds) / base:.2f}x | {counted} |")
    (busy_after, own_after), minutes = cpu_seconds(), (time.perf_counter() - started) / 60
    others = (busy_after - busy) - (own_after - own)
    return [f"## {name}: {task.about}", "",
            f"{datetime.date.today()}, {minutes:.0f} min; other processes used {others:.0f} "
            f"CPU-s meanwhile ({others / (minutes * 60):.2f} cores: above about 0.1 the cost "
            f"column is skewed). {task.epochs} epochs, seeds 0..{seeds - 1}; none (no "
            f"augmentation): {mean_range([a for a, _, _ in plain])}.", "",
            "| probe_growth | in the fit | retrained | cost of the fit | picks |",
            "|---:|---:|---:|---:|---|", *rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--growths", default="0,0.5,1")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    names = [name for name in args.tasks.split(",") if name]
    if unknown := [name for name in names if name not in TASKS]:
        parser.error(f"unknown task(s) {unknown}; tasks are {list(TASKS)}")
    growths = [float(value) for value in args.growths.split(",")]
    header = ["# The RandAugment race's probing schedule", "",
              "The fixed 3-conv network and tasks of `bench_augment_quality.py`, 2 CPU threads; "
              "`RandAugmentSearch` defaults but `probe_growth` (probes every `probe_every * "
              "(candidates / survivors) ** probe_growth` steps). Cost: the fit's seconds over "
              "a plain fit's. Reproduce a task's section with `python -m "
              "benchmarks.bench_race_settings --tasks <task>`; a run replaces the sections of "
              "the tasks it runs and keeps the others.", ""]
    run_sections(args.out, names, lambda name: run_task(name, args.seeds, growths), header)


if __name__ == "__main__":
    main()
