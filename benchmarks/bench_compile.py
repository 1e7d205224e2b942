"""What ``torch.compile`` costs a one-shot search, written to results/compile.md.

Training steps (SGD, batch 32, random 1x8x8 inputs, mobilenet_tiny's small digits space) of:

1. the largest sub-network, extracted (a plain network), eager and compiled;
2. the supernet with a new uniformly sampled path at every step (SPOS), eager and compiled,
   the compiled one stopped after ``--limit`` seconds. Inductor's caches are off, so every
   graph is compiled, not read back from an earlier run.

For each: wall time of the whole run (compilation included), steps done, and the graphs
dynamo compiled. This is why ``OneShotNAS`` refuses a compiled model: every sampled path is
another graph.

    .venv/bin/python -m benchmarks.bench_compile [--steps N] [--limit S] [--out PATH]
"""

from __future__ import annotations

import os

os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"  # each compilation measured, not cached

import argparse
import datetime
import platform
import random
import time
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn

from benchmarks.bench_costs import THREADS, cpu_model, write_atomic
from nas_aug.search_spaces import create_space
from nas_aug.supernet import activate, extract_subnet, space_of

SPACE = dict(num_classes=10, in_chans=1, img_size=8, expand_ratios=(3, 6), kernel_sizes=(3, 5))
BATCH = 32


def run(model: nn.Module, steps: int, limit: float, sample_paths: bool) -> dict[str, float]:
    """Train ``model`` for ``steps`` steps (or until ``limit`` seconds have passed)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    supernet = getattr(model, "_orig_mod", model)
    space, rng = space_of(supernet), random.Random(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.rand(BATCH, 1, 8, 8), torch.randint(0, 10, (BATCH,))
    started, done = time.perf_counter(), 0
    while done < steps and time.perf_counter() - started < limit:
        if sample_paths:
            activate(supernet, space.random(rng))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        done += 1
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    return {"seconds": time.perf_counter() - started, "steps": done, "graphs": graphs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--limit", type=float, default=300.0)
    parser.add_argument("--note", default="Nothing else ran on the machine.",
                        help="what else ran on the machine, for the header")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "compile.md")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    supernet = create_space("mobilenet_tiny", **SPACE).train()
    largest = space_of(supernet).largest()
    plain = extract_subnet(supernet, largest, torch.zeros(1, 1, 8, 8)).train()
    run(plain, 3, args.limit, False)  # untimed: the process's first steps carry one-time costs
    rows = []
    for name, model, sample_paths in (
            ("plain network (largest path), eager", plain, False),
            ("plain network (largest path), compiled", torch.compile(plain), False),
            ("supernet, a sampled path per step, eager", supernet, True),
            ("supernet, a sampled path per step, compiled", torch.compile(supernet), True)):
        result = run(model, args.steps, args.limit, sample_paths)
        rows.append((name, result))
        print(f"{name}: {result}", flush=True)
    lines = [
        "# torch.compile and a one-shot search", "",
        f"Written by `benchmarks/bench_compile.py` on {datetime.date.today()}: "
        f"{cpu_model()}, {THREADS} threads, torch {torch.__version__}, Python "
        f"{platform.python_version()}; batch {BATCH}, 1x8x8 inputs, {args.steps} SGD steps "
        f"(stopped after {args.limit:.0f} s), one run each after an untimed warm-up. "
        f"{args.note}",
        "", "| run | steps done | wall time (s), compilation included | graphs compiled |",
        "|---|---|---|---|"]
    lines += [f"| {name} | {r['steps']} | {r['seconds']:.1f} | {r['graphs']} |"
              for name, r in rows]
    plain_compiled, sampled = rows[1][1], rows[3][1]
    limit = torch._dynamo.config.recompile_limit
    lines += ["", f"The plain network compiled {plain_compiled['graphs']} graph for its "
              f"{plain_compiled['steps']} steps. The supernet compiled {sampled['graphs']} "
              f"graphs in its first {sampled['steps']} steps, about "
              f"{sampled['seconds'] / max(sampled['graphs'], 1):.0f} s per graph here: every "
              "sampled path changes the forward's control flow and shapes, so dynamo compiles "
              f"again for nearly every step until its recompile limit ({limit}), and runs the "
              "rest eagerly. `OneShotNAS` therefore refuses a compiled model; compile the "
              "exported sub-network instead."]
    write_atomic(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
