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

import collections
import statistics
import time
from pathlib import Path

from benchmarks.bench_augment_quality import TASKS, describe, fit_and_test, found
from benchmarks.bench_costs import cpu_seconds
from benchmarks.bench_dada_settings import mean_range, section_head, settings_main

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
    return [*section_head(name, seeds, started, (busy, own), plain),
            "| probe_growth | in the fit | retrained | cost of the fit | picks |",
            "|---:|---:|---:|---:|---|", *rows, ""]


if __name__ == "__main__":
    settings_main(__doc__, "bench_race_settings", OUT, "growths", "0,0.5,1",
                  "The RandAugment race's probing schedule",
                  "`RandAugmentSearch` defaults but `probe_growth` (probes every `probe_every * "
                  "(candidates / survivors) ** probe_growth` steps).", run_task)
