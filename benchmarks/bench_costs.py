"""What a sample's cost and a supernet training step cost on CPU, written to results/costs.md.

1. Cost of one sample of ``mobilenet_tiny``: a ``CostTable`` look-up vs extracting the
   standalone sub-network and counting it with fvcore or torch (the table must agree with
   fvcore on every timed sample, or this script raises).
2. One supernet training step (forward + backward + AdamW), contiguous vs channels_last.

    .venv/bin/python benchmarks/bench_costs.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import math
import os
import platform
import random
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_aug.constraints import Cost, CostTable, FvcoreCounter, TorchCounter, count_params
from nas_aug.search_spaces import create_space
from nas_aug.supernet import activate, extract_subnet

THREADS = 2
BATCH = 64
# name -> (create_space kwargs, input shape); 8x8 is the digits recipe's space
SPACES = {
    "8x8": (dict(in_chans=1, img_size=8, kernel_sizes=(3, 5)), (1, 8, 8)),
    "32x32": (dict(in_chans=3, img_size=32), (3, 32, 32)),
}
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def bench_sample_cost(net: nn.Module, shape: tuple[int, ...], n: int, seed: int
                      ) -> tuple[CostTable, dict]:
    """The built table, and median seconds per sample of each way to cost a sample over ``n``
    seeded random samples (plus the build time, torch's share of fvcore's MACs, and
    ``mismatches``: a line per sample where the table disagrees with fvcore)."""
    table, build_s = timed(CostTable.build, net, shape)
    fvcore, torch_counter = FvcoreCounter(), TorchCounter()
    example = torch.zeros(1, *shape)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {"table": [], "extract": [], "fvcore": [], "torch": []}
    torch_share, mismatches = [], []
    for _ in range(n):
        sample = table.space.random(rng)
        cost, t_table = timed(table, sample)
        subnet, t_extract = timed(extract_subnet, net, sample, example)
        macs, t_fvcore = timed(fvcore, subnet, example)
        torch_macs, t_torch = timed(torch_counter, subnet, example)
        counted = Cost(macs, count_params(subnet))
        if cost != counted:
            mismatches.append(f"CostTable gives {cost} but fvcore counts {counted} for {sample}")
        torch_share.append(torch_macs / macs)
        times["table"].append(t_table)
        times["extract"].append(t_extract)
        times["fvcore"].append(t_extract + t_fvcore)
        times["torch"].append(t_extract + t_torch)
    median = {k: statistics.median(v) for k, v in times.items()}
    return table, dict(median, build=build_s, torch_share=(min(torch_share), max(torch_share)),
                       mismatches=mismatches)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> None:
    """One training step: forward, cross-entropy, backward, optimizer step."""
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def interleaved_times(steps: dict[Any, Callable[[], object]], repeats: int, warmup: int
                      ) -> dict[Any, list[float]]:
    """Seconds of each call of every step, the steps run in turn (one call each per round) so
    that a load change on the machine hits them all alike; the first ``warmup`` rounds dropped."""
    times: dict[Any, list[float]] = {key: [] for key in steps}
    for r in range(warmup + repeats):
        for key, step in steps.items():
            _, seconds = timed(step)
            if r >= warmup:
                times[key].append(seconds)
    return times


def bench_train_step(net: nn.Module, sample: dict, shape: tuple[int, ...], repeats: int,
                     warmup: int) -> dict[str, float]:
    """Median seconds per training step of ``sample``'s path, per memory format (interleaved)."""
    x, y = torch.randn(BATCH, *shape), torch.randint(0, 10, (BATCH,))
    steps = {}
    for name, fmt in FORMATS.items():
        model = copy.deepcopy(net).to(memory_format=fmt).train()
        activate(model, sample)
        steps[name] = functools.partial(train_step, model,
                                        torch.optim.AdamW(model.parameters(), lr=1e-3),
                                        x.contiguous(memory_format=fmt), y)
    times = interleaved_times(steps, repeats, warmup)
    return {name: statistics.median(v) for name, v in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU-seconds of the whole machine, CPU-seconds of this process) so far."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "costs.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_samples, repeats, warmup = (5, 3, 1) if args.quick else (50, 20, 3)
    warnings.filterwarnings("ignore", message=".*torch.jit.*is deprecated.*")
    torch.set_num_threads(THREADS)
    torch.manual_seed(args.seed)
    start, (busy0, own0) = time.perf_counter(), cpu_seconds()

    cost_rows, train_rows, notes = [], [], []
    for name, (kwargs, shape) in SPACES.items():
        net = create_space("mobilenet_tiny", **kwargs)
        table, c = bench_sample_cost(net, shape, n_samples, args.seed)
        if c["mismatches"]:
            raise RuntimeError(c["mismatches"][0])
        gain = c["fvcore"] - c["table"]
        break_even = math.ceil(c["build"] / gain) if gain > 0 else "never"
        cost_rows.append(
            f"| {name} {shape} | {c['table'] * 1e6:.0f} µs | {c['extract'] * 1e3:.1f} ms "
            f"| {c['fvcore'] * 1e3:.1f} ms | {c['torch'] * 1e3:.1f} ms "
            f"| {c['fvcore'] / c['table']:,.0f}× | {c['torch'] / c['table']:,.0f}× "
            f"| {c['build']:.2f} s | {break_even} |")
        lo, hi = c["torch_share"]
        notes.append(f"{name}: {lo:.1%}–{hi:.1%}")

        space = table.space
        paths = {"largest": space.largest(), "smallest": space.smallest(),
                 "random": space.random(random.Random(args.seed + 1))}
        for path, sample in paths.items():
            t = bench_train_step(net, sample, shape, repeats, warmup)
            train_rows.append(
                f"| {name} {shape} | {path} | {table(sample).macs / 1e6:.2f}M "
                f"| {t['contiguous'] * 1e3:.1f} | {t['channels_last'] * 1e3:.1f} "
                f"| {t['contiguous'] / t['channels_last']:.2f}× |")

    total = time.perf_counter() - start
    busy, own = cpu_seconds()
    others = max(0.0, (busy - busy0) - (own - own0))
    mode = "quick (smoke run: few repeats, numbers are rough)" if args.quick else "full"
    text = "\n".join([
        "# Costs: per-sample cost models and supernet training steps",
        "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; mode: {mode}; "
        f"total runtime {total:.0f} s",
        f"- torch {torch.__version__}, Python {platform.python_version()}, CPU: {cpu_model()} "
        f"({os.cpu_count()} logical cores), **torch.set_num_threads({THREADS})**",
        f"- Other processes used {others:.1f} CPU-s during the run ({others / total:.2f} cores "
        "on average): they skew timings; medians resist, but do not remove, that noise",
        "- Spaces: `mobilenet_tiny` with 8x8 = `in_chans=1, img_size=8, kernel_sizes=(3, 5)` "
        "(the digits recipe), 32x32 = `in_chans=3, img_size=32` (defaults)",
        "",
        f"## 1. Cost of one sample (median over {n_samples} random samples, seed {args.seed})",
        "",
        "Extract = `extract_subnet`; fvcore / torch = extract + `FvcoreCounter` / "
        "`TorchCounter` of the sub-network (batch 1). Build = `CostTable.build` once, "
        "including its own check. Break-even = samples after which the table has paid for "
        "its build vs fvcore. The table matched fvcore's MACs and the parameter count on every "
        "sample timed (checked by the script).",
        "",
        "| input | table look-up | extract | extract + fvcore | extract + torch "
        "| fvcore ÷ table | torch ÷ table | build (once) | break-even (samples) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *cost_rows,
        "",
        "TorchCounter counts convolutions and matmuls only; fvcore also counts batch norm and "
        "pooling. Torch's MACs as a share of fvcore's, over these samples: "
        + "; ".join(notes) + ".",
        "",
        f"## 2. Supernet training step on CPU (batch {BATCH}, median ms over {repeats} steps "
        f"after {warmup} warm-up, formats interleaved)",
        "",
        "One step = forward + cross-entropy + backward + AdamW on the whole supernet with "
        "`activate(net, path)`; channels_last = `net.to(memory_format=torch.channels_last)` "
        "and a channels_last input. MACs per image from the cost table.",
        "",
        "| input | path | MACs | contiguous ms | channels_last ms | contiguous ÷ channels_last |",
        "|---|---|---:|---:|---:|---:|",
        *train_rows,
        "",
    ])
    write_atomic(args.out, text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
