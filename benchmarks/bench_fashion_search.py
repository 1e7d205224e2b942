"""The whole one-shot search on Fashion-MNIST, for each supernet training option, against what
the same compute buys without it: ``recipes/fashion_mnist_spos.yaml``'s data, space and budget,
scaled down by a ``bench_quality.QUALITY_MODES`` mode.

    python -m benchmarks.bench_fashion_search [--quick] [--options uniform sandwich+distill]
        [--seeds 0 1 2] [--out FILE]

For every seed s (the data split stays the recipe's; s sets the weights, the training order,
the search and the random draws), each network is rebuilt and trained from scratch with s:

- searched (option): the recipe's ``OneShotNAS`` (SPOS with that training option, evolution),
  its pick retrained;
- random search (option's compute): architectures uniform within the budget, trained one after
  another for as long as that search took (supernet fit, cost table, evolution and export);
  the best on the held-out split;
- largest in the budget: the most parameters (then MACs) the budget admits
  (``CostTable.largest_within``, the reference every search result carries);
- hand-picked: ``bench_quality.HAND_RULE``.

Every finished unit is kept in a JSON file beside the table (``--out`` with ``.json``), so a
killed run continues where it stopped; a run with another mode refuses that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.bench_costs import cpu_model, cpu_seconds, write_atomic
from benchmarks.bench_nasbench201_ranking import OPTIONS
from benchmarks.bench_quality import HAND_RULE, QUALITY_MODES, RECIPE, QualityBench, Trained
from nas_aug.data.fashion_mnist import DEFAULT_ROOT
from nas_aug.space import Sample
from nas_aug.supernet import canonical_sample

OUT = Path(__file__).resolve().parent / "results" / "fashion_search.md"
FIXED = ("largest in the budget", "hand-picked")


def option_overrides(option: str) -> tuple[str, ...]:
    """The recipe overrides that train the supernet with ``option`` (SPOS keyword arguments,
    as the ranking benchmark names them)."""
    return tuple(f"search.options.{key}={value}" for key, value in OPTIONS[option].items())


def _record(run: Trained) -> dict:
    return {"sample": run.sample, "macs": run.macs, "params": run.params,
            "seconds": run.seconds, "heldout": run.heldout, "test": run.test}


class Units:
    """The finished units of a run, saved after each (atomically) and read back on restart."""

    def __init__(self, path: Path, fingerprint: dict):
        fingerprint = json.loads(json.dumps(fingerprint))  # as the file holds it
        self.path, self.fingerprint, self.done = path, fingerprint, {}
        if path.exists():
            saved = json.loads(path.read_text())
            if saved["fingerprint"] != fingerprint:
                raise SystemExit(f"{path} holds a run with {saved['fingerprint']}, not "
                                 f"{fingerprint}; move it away or pass another --out")
            self.done = saved["units"]

    def get(self, key: str, compute, *args):
        """The unit ``key``: saved, or ``compute(*args)`` now."""
        if key not in self.done:
            started = time.perf_counter()
            self.done[key] = compute(*args)
            self._save()
            print(f"[{datetime.datetime.now():%H:%M:%S}] {key}: "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        return self.done[key]

    def _save(self) -> None:
        write_atomic(self.path, json.dumps({"fingerprint": self.fingerprint,
                                            "units": self.done}, indent=1))


def searched(bench: QualityBench, seed: int) -> dict:
    """The search with ``seed`` and its pick retrained with ``seed``."""
    arch = bench.search(seed)
    cost = bench.nas.result.cost
    run = bench.train("searched", arch.sample, seed)
    return {**_record(run), "search_seconds": bench.search_seconds,
            "supernet_seconds": cost["train_seconds"], "evolution_seconds": cost["search_seconds"]}


def fixed_network(bench: QualityBench, name: str, sample: Sample, seed: int) -> dict:
    return _record(bench.train(name, sample, seed))


def random_search(bench: QualityBench, seconds: float, seed: int) -> dict:
    """The random search's candidates for ``seconds``, and its held-out pick tested."""
    candidates, used = bench.random_search(seconds, random.Random(seed), seed)
    best = max(candidates, key=lambda c: (c.heldout, -c.macs))
    bench.test(best)
    return {**_record(best), "budget_seconds": seconds, "used_seconds": used,
            "candidates": [_record(c) for c in candidates]}


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def render(units: dict, options: list[str], seeds: list[int], header: list[str]) -> list[str]:
    """The tables of the finished ``units``, below ``header``."""
    rows: dict[str, list[dict]] = {}
    for option in options:
        rows[f"searched ({option})"] = [units[f"search/{option}/{s}"] for s in seeds]
        rows[f"random search, {option}'s compute"] = [units[f"random/{option}/{s}"]
                                                      for s in seeds]
    for name in FIXED:
        rows[name] = [units[f"{name}/{s}"] for s in seeds]
    lines = header + ["", "## Test top-1, each network retrained from scratch", "",
                      "| network | test top-1 per seed | mean ± sd | MACs per seed | params per "
                      "seed |", "|---|---|---:|---|---|"]
    for name, runs in rows.items():
        tests, macs, params = ([run[key] for run in runs] for key in ("test", "macs", "params"))
        mean, sd = _stats(tests)
        lines.append(f"| {name} | {', '.join(f'{t:.4f}' for t in tests)} | {mean:.4f} ± {sd:.4f} "
                     f"| {', '.join(f'{m:,}' for m in macs)} | "
                     f"{', '.join(f'{p:,}' for p in params)} |")
    lines += ["", "Target (issue #12): searched ahead of each baseline by more than the seed "
              "spread (here: the difference of the means above the larger of the two sds).", ""]
    for option in options:
        ours = _stats([r["test"] for r in rows[f"searched ({option})"]])
        for name in [f"random search, {option}'s compute", *FIXED]:
            theirs = _stats([r["test"] for r in rows[name]])
            gap, spread = ours[0] - theirs[0], max(ours[1], theirs[1])
            verdict = ("**met**" if gap > spread else "within the spread" if gap > -spread
                       else "**behind**")
            lines.append(f"- searched ({option}) vs {name}: {gap:+.4f} (spread {spread:.4f}): "
                         f"{verdict}")
    lines += ["", "## Search cost over one standalone training of the pick", "",
              "| option | supernet fit, s | evolution, s | whole search, s | the pick's "
              "retraining, s | search ÷ retraining | random-search candidates trained |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for option in options:
        runs = [units[f"search/{option}/{s}"] for s in seeds]
        randoms = [units[f"random/{option}/{s}"] for s in seeds]
        mean = lambda key, rs=runs: statistics.mean(r[key] for r in rs)  # noqa: E731
        ratio = statistics.mean(r["search_seconds"] / r["seconds"] for r in runs)
        lines.append(f"| {option} | {mean('supernet_seconds'):.0f} | "
                     f"{mean('evolution_seconds'):.0f} | {mean('search_seconds'):.0f} | "
                     f"{mean('seconds'):.0f} | {ratio:.2f}x | "
                     f"{', '.join(str(len(r['candidates'])) for r in randoms)} |")
    lines += ["", "Means over the seeds; the whole search also counts the cost table and the "
              "export. A retraining's seconds include its held-out scoring.", "",
              "## Held-out top-1 of each network (what the random search picks by)", "",
              "| network | held-out top-1 per seed |", "|---|---|"]
    for name, runs in rows.items():
        heldout = ", ".join(f"{run['heldout']:.4f}" for run in runs)
        lines.append(f"| {name} | {heldout} |")
    return lines + ["", "The samples themselves are in the JSON file beside this table.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick mode: a smoke run")
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS),
                        default=["uniform", "sandwich+distill"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not Path(DEFAULT_ROOT).is_dir():
        parser.error(f"Fashion-MNIST is not in {DEFAULT_ROOT}: run `make data`")
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    mode_name = "quick" if args.quick else "full"
    mode = QUALITY_MODES[mode_name]
    units = Units(args.out.with_suffix(".json"),
                  {"mode": dataclasses.asdict(mode), "threads": args.threads})
    started, (busy0, own0), load0 = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        benches = {option: QualityBench(mode, Path(tmp) / option, option_overrides(option))
                   for option in args.options}
        fixed = next(iter(benches.values()))  # the fixed networks need no search
        fits = fixed.table.largest_within(fixed.budget)
        samples = {"largest in the budget": canonical_sample(fixed.net, fits, fixed.space),
                   "hand-picked": fixed.hand_picked()}
        for seed in args.seeds:
            for option, bench in benches.items():
                search = units.get(f"search/{option}/{seed}", searched, bench, seed)
                units.get(f"random/{option}/{seed}", random_search, bench,
                          search["search_seconds"], seed)
            for name, sample in samples.items():
                units.get(f"{name}/{seed}", fixed_network, fixed, name, sample, seed)
    busy, own = cpu_seconds()
    other = max(0.0, (busy - busy0) - (own - own0))
    minutes = (time.perf_counter() - started) / 60
    sizes, data = fixed.datamodule.sizes, fixed.recipe.data.kwargs
    header = [
        "# The whole search on Fashion-MNIST against random search, the largest network in "
        "the budget and a hand-picked one", "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; mode **{mode_name}** "
        f"({mode.epochs} epochs for the supernet and every retraining, evolution "
        f"{mode.population}x{mode.generations}); CPU: {cpu_model()}, {args.threads} torch "
        f"threads; Python {platform.python_version()}, torch {torch.__version__}",
        f"- This invocation took {minutes:.0f} min (units already in the JSON file were not "
        f"rerun); other processes used {other:.0f} CPU-s meanwhile (1-min load {load0:.2f} at "
        "the start). Accuracies do not depend on the load; the seconds do.",
        f"- Reproduce: `python -m benchmarks.bench_fashion_search"
        f"{''.join(' ' + a for a in sys.argv[1:])}`",
        f"- Data: `{RECIPE.name}` (Fashion-MNIST at {data['img_size']}x{data['img_size']}, "
        f"batch {data['batch_size']}), scaled down: {sizes['train']} train / "
        f"{sizes['heldout']} held-out / {sizes['test']} test images (one test image = "
        f"{1 / sizes['test']:.4f}); space `{fixed.recipe.space.name}` with "
        f"`{fixed.recipe.space.kwargs}`; {fixed.budget}; recipe lr {fixed.recipe.retrain.lr}",
        f"- Seeds {args.seeds}: each sets the weights, the training order, the search and the "
        "random draws; the data split is the recipe's (seed 0). Every network is rebuilt with "
        "`build_subnet(weights=False)`, trained from scratch, its batch norm recalibrated on "
        f"{fixed.calibration_batches} training batches (as the search does for each candidate), "
        "then tested.",
        "- Training options (SPOS keyword arguments): "
        + "; ".join(f"{o}: `{OPTIONS[o]}`" for o in args.options)
        + f". Hand-picked: {HAND_RULE}. Largest in the budget: the most parameters, then "
        "MACs, the budget allows (`CostTable.largest_within`, hill climbing over the cost "
        f"table): {fixed.table(samples['largest in the budget'])}.",
    ]
    text = "\n".join(render(units.done, args.options, args.seeds, header))
    write_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
