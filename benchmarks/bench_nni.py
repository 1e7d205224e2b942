"""One search step of nas_aug's DARTS (and SPOS) against NNI 3.0's, written to
results/nni_comparison.md.

One search space is written in both libraries: a small CNN (stem, 4 cells, head; 16 channels)
whose cells are each a layer choice among conv 3x3 / conv 5x5 / depthwise-separable 3x3 /
max-pool 3x3 / identity, built with the same seed (the script checks that both sides start from
identical weights). Data: scikit-learn's digits upsampled to 16x16, batch 64, the first 1280
images for weights and the rest held out for the architecture. Each side runs in a fresh
process of its own (ours in .venv, NNI in .venv-nni, where NNI is installed apart because it
pins ``filelock<3.12``), each timing and measuring itself, at two levels:

* ``step``: the search step in plain torch, no Lightning: DARTS = one first-order
  architecture step on a held-out batch, then one weight step (SGD) on a training batch, as
  NNI's ``DartsLightningModule.training_step`` and our ``OneShotNAS`` (its strategy's
  ``outer_step``) do;
  random = one uniformly sampled path, then one weight step;
* ``fit``: what users run: a Lightning fit with ``OneShotNAS(strategy="darts"|"spos")`` for
  us, NNI's ``DARTS()`` / ``RandomOneShot()`` strategy turning its ``Lightning`` evaluator into
  the one-shot module that the same Trainer fits; time per step = the interval between
  successive ``on_train_batch_end`` hooks.

Memory is the resident set (RSS) of the process, read from ``/proc/self/status``: the
high-water mark over the timed steps (reset just before them by writing 5 to
``/proc/self/clear_refs``), its rise over the RSS just before them, and the process's peak
(``ru_maxrss``, imports and set-up included).

    python3 -m venv .venv-nni && .venv-nni/bin/pip install torch==2.14.1 torchvision==0.29.1
    .venv-nni/bin/pip install nni pytorch_lightning scikit-learn
    .venv/bin/python -m benchmarks.bench_nni [--quick] [--threads N] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results" / "nni_comparison.md"
THREADS, BATCH, CHANNELS, CELLS, SIZE, N_TRAIN = 1, 64, 16, 4, 16, 1280
WEIGHT_LR = 0.025  # SGD, momentum 0.9, weight decay 3e-4 (DARTS's weight optimizer)
OPS = ("conv3x3", "conv5x5", "sepconv3x3", "maxpool3x3", "identity")
STRATEGIES = {"darts": ("darts", "DARTS"), "random": ("spos", "RandomOneShot")}
LEVELS = ("step", "fit")
MARK = "RESULT "


# ---- the search space, the data and the memory readings (both sides) -------------------------
def candidate_ops(c: int) -> dict[str, nn.Module]:
    """The candidates of one cell, in ``OPS`` order (DARTS's ReLU-conv-BN operations)."""
    return {
        "conv3x3": nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(c)),
        "conv5x5": nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 5, padding=2, bias=False),
                                 nn.BatchNorm2d(c)),
        "sepconv3x3": nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                                    nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)),
        "maxpool3x3": nn.MaxPool2d(3, stride=1, padding=1),
        "identity": nn.Identity(),
    }


def build_space(base: type[nn.Module], layer_choice: Callable[[str, dict], nn.Module],
                seed: int) -> nn.Module:
    """The search space as a ``base`` subclass whose cells are ``layer_choice(label, ops)``."""

    class SearchNet(base):  # type: ignore[misc, valid-type]
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, CHANNELS, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(CHANNELS))
            # a Sequential, not a ModuleList: nas_aug's CostTable.build skips containers
            # that are never called themselves (see the notes in the table)
            self.cells = nn.Sequential(*[layer_choice(f"cell{i}", candidate_ops(CHANNELS))
                                         for i in range(CELLS)])
            self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(CHANNELS, 10))

        def forward(self, x):
            return self.head(self.cells(self.stem(x)))

    torch.manual_seed(seed)
    return SearchNet()


def fingerprint(net: nn.Module) -> str:
    """Parameter count and weight sums, to check that both sides start from the same weights."""
    params = list(net.parameters())
    total = sum(float(p.detach().double().sum()) for p in params)
    absolute = sum(float(p.detach().double().abs().sum()) for p in params)
    return f"{sum(p.numel() for p in params)} params, sum {total:.9g}, |sum| {absolute:.9g}"


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, held-out) tensors: digits upsampled to ``SIZE`` x ``SIZE``, standardised."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(data.target, dtype=torch.long)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


def batches(split: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = split
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x) - BATCH + 1, BATCH)]


def loaders(train, heldout, steps: int, loader_cls: type) -> tuple[Any, Any]:
    """Training loader long enough for ``steps`` steps in one epoch (no epoch boundary in the
    timing), held-out loader over the held-out split; fixed order."""
    from torch.utils.data import TensorDataset

    repeats = -(-steps * BATCH // len(train[0]))
    train_set = TensorDataset(train[0].repeat(repeats, 1, 1, 1), train[1].repeat(repeats))
    return (loader_cls(train_set, batch_size=BATCH, shuffle=False, drop_last=True),
            loader_cls(TensorDataset(*heldout), batch_size=BATCH, shuffle=False, drop_last=True))


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Meter:
    """Step timestamps; the RSS high-water mark reset before the timed steps."""

    def __init__(self, warmup: int, repeats: int):
        self.warmup, self.repeats = warmup, repeats
        self.stamps: list[float] = []
        self.rss_before = self.step_peak = float("nan")

    def tick(self) -> None:
        """Call at the end of each step; ``warmup + repeats`` steps in all."""
        self.stamps.append(time.perf_counter())
        if len(self.stamps) == self.warmup:
            self.rss_before = status_mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        elif len(self.stamps) == self.warmup + self.repeats:
            self.step_peak = status_mb("VmHWM")

    @property
    def done(self) -> bool:
        return len(self.stamps) >= self.warmup + self.repeats

    def result(self) -> dict[str, Any]:
        if not self.done:
            raise RuntimeError(f"only {len(self.stamps)} of {self.warmup + self.repeats} steps "
                               "ran")
        stamps = self.stamps[self.warmup - 1:self.warmup + self.repeats]
        return {"times": [b - a for a, b in zip(stamps, stamps[1:])],
                "rss_before_mb": self.rss_before, "step_peak_mb": self.step_peak}


def unpack(mixture: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """A gradient strategy's mixture as ``(weights, support)`` (a ``Mixture``, or a plain dict of
    weights in versions before ``Mixture``)."""
    return (mixture.weights, mixture.support) if hasattr(mixture, "weights") else (mixture, None)


def sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=WEIGHT_LR, momentum=0.9, weight_decay=3e-4)


# ---- our side ---------------------------------------------------------------------------------
def ours(strategy: str, level: str, warmup: int, repeats: int, seed: int) -> dict[str, Any]:
    import lightning
    import lightning.pytorch as pl

    import nas_aug
    from nas_aug.bilevel import preserved_buffers
    from nas_aug.callbacks import OneShotNAS
    from nas_aug.space import LayerChoice
    from nas_aug.strategies import DARTS, SearchContext
    from nas_aug.strategies.gradient import ArchitectureStep
    from nas_aug.supernet import activate, mixed, set_mixing, space_of

    info = {"versions": f"nas_aug {nas_aug.__version__}, lightning {lightning.__version__}",
            "rss_imported_mb": status_mb("VmRSS")}
    train, heldout = digits()
    net = build_space(nn.Module, LayerChoice, seed)
    info["fingerprint"] = fingerprint(net)
    space = space_of(net)
    meter = Meter(warmup, repeats)
    first_loss: list[float] = []

    if level == "step":
        train_batches, heldout_batches = batches(train), batches(heldout)
        opt = sgd(net.parameters())
        rng = random.Random(seed)
        if strategy == "darts":
            nas = DARTS()
            nas.seed(seed)
            nas.setup(SearchContext(net, space))
            set_mixing(net, unpack(nas.train_mixing())[0], space,
                       example_input=train[0][:2])  # the probe, once, as OneShotNAS.setup
            weights = [p for p in net.parameters() if p.requires_grad]

        def weight_step(x, y):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()

        for i in range(warmup + repeats):
            x, y = train_batches[i % len(train_batches)]
            xv, yv = heldout_batches[i % len(heldout_batches)]
            if strategy == "darts":  # as OneShotNAS's outer step, without Lightning
                def loss_on(mixture, data, step_seed=seed * 1_000_003 + i):
                    weights, support = unpack(mixture)
                    with mixed(net, weights, space, support=support), \
                            torch.random.fork_rng(devices=[]):
                        torch.manual_seed(step_seed)
                        return F.cross_entropy(net(data[0]), data[1])

                step = ArchitectureStep(heldout_loss=lambda m, d=(xv, yv): loss_on(m, d),
                                        train_loss=lambda m, d=(x, y): loss_on(m, d),
                                        weights=weights, lr=WEIGHT_LR)
                with preserved_buffers(net):
                    nas.architecture_step(step)
                if i == 0:
                    first_loss.append(nas.last_losses["heldout"])
                weights, support = unpack(nas.train_mixing())
                set_mixing(net, weights, space, support=support)
            else:
                activate(net, space.random(rng), space)
            weight_step(x, y)
            meter.tick()
        arch_steps = nas.updates if strategy == "darts" else None
    else:
        class Lit(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.backbone = net

            def forward(self, x):
                return self.backbone(x)

            def training_step(self, batch, batch_idx):
                return F.cross_entropy(self(batch[0]), batch[1])

            def configure_optimizers(self):
                return sgd(self.parameters())

        class Timer(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if not first_loss and nas.strategy.has_outer_step:
                    first_loss.append(nas.strategy.last_losses["heldout"])
                meter.tick()

        train_loader, heldout_loader = loaders(train, heldout, warmup + repeats,
                                               torch.utils.data.DataLoader)
        search = dict(top_k=1) if strategy == "darts" else dict(population_size=4, generations=1)
        nas = OneShotNAS(strategy=STRATEGIES[strategy][0], heldout=heldout_loader,
                         input_shape=(1, SIZE, SIZE), calibration_batches=2, progress=False,
                         seed=seed, **search)
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=warmup + repeats,
                             callbacks=[nas, Timer()],
                             accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0)
        trainer.fit(Lit(), train_dataloaders=train_loader)
        arch_steps = nas.strategy.updates if nas.strategy.has_outer_step else None
    return {**info, **meter.result(), "arch_steps": arch_steps,
            "first_heldout_loss": first_loss[0] if first_loss else None}


# ---- NNI's side -------------------------------------------------------------------------------
def nni_side(strategy: str, level: str, warmup: int, repeats: int, seed: int) -> dict[str, Any]:
    warnings.filterwarnings("ignore", module=r"nni\..*")
    import nni
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
    from nni.nas.strategy import DARTS, RandomOneShot

    info = {"versions": f"nni {nni.__version__}, pytorch_lightning {pl.__version__}",
            "rss_imported_mb": status_mb("VmRSS")}
    train, heldout = digits()
    space = build_space(ModelSpace, lambda label, ops: LayerChoice(ops, label=label), seed)
    info["fingerprint"] = fingerprint(space)
    nas = DARTS() if strategy == "darts" else RandomOneShot()
    meter = Meter(warmup, repeats)
    first_loss: list[float] = []

    if level == "step":
        # NNI's one-shot modules, their training_step without Lightning (DARTS: arch step on
        # the val batch, then the weight step; random: resample, then the weight step)
        net = nas.mutate_model(space)
        alpha = {id(p): p for m in net.modules() if hasattr(m, "arch_parameters")
                 for p in m.arch_parameters()}
        opt = sgd([p for p in net.parameters() if id(p) not in alpha])
        arch_opt = torch.optim.Adam(list(alpha.values()), 3e-4, betas=(0.5, 0.999),
                                    weight_decay=1e-3) if alpha else None
        train_batches, heldout_batches = batches(train), batches(heldout)

        def resample():
            memo: dict[str, Any] = {}
            for module in net.modules():
                if isinstance(module, BaseSuperNetModule):
                    memo.update(module.resample(memo=memo))

        for i in range(warmup + repeats):
            x, y = train_batches[i % len(train_batches)]
            xv, yv = heldout_batches[i % len(heldout_batches)]
            if strategy == "darts":
                resample()
                arch_opt.zero_grad()
                loss = F.cross_entropy(net(xv), yv)
                loss.backward()
                arch_opt.step()
                if i == 0:
                    first_loss.append(float(loss.detach()))
            resample()
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            meter.tick()
        arch_steps = adam_steps(arch_opt)
    else:
        class Lit(LightningModule):
            def forward(self, x):
                return self.model(x)

            def training_step(self, batch, batch_idx):
                return F.cross_entropy(self(batch[0]), batch[1])

            def validation_step(self, batch, batch_idx):
                pass

            def configure_optimizers(self):
                return sgd(self.parameters())  # DARTS() filters out its alphas

        arch_opts = []

        class Timer(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                meter.tick()
                if meter.done and hasattr(pl_module, "architecture_optimizers"):
                    arch_opts.append(pl_module.architecture_optimizers())

        train_loader, heldout_loader = loaders(train, heldout, warmup + repeats, DataLoader)
        # limit_train_batches, not max_steps: NNI's DARTS steps two optimizers per batch,
        # and Lightning counts each as a global step
        trainer = Trainer(max_epochs=1, limit_train_batches=warmup + repeats,
                          callbacks=[Timer()], accelerator="cpu", devices=1, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False,
                          num_sanity_val_steps=0, limit_val_batches=0)
        evaluator = Lightning(Lit(), trainer, train_dataloaders=train_loader,
                              val_dataloaders=heldout_loader)
        # what NasExperiment's one-shot path does (strategy._initialize, then the sequential
        # engine's evaluate), without its experiment manager
        model = nas.mutate_model(space)
        nas.mutate_evaluator(evaluator).evaluate(model)
        arch_steps = adam_steps(getattr(arch_opts[0], "optimizer", None) if arch_opts else None)
    return {**info, **meter.result(), "arch_steps": arch_steps,
            "first_heldout_loss": first_loss[0] if first_loss else None}


def adam_steps(optimizer: torch.optim.Optimizer | None) -> int | None:
    """How many steps an Adam took (``None`` for no optimizer)."""
    if optimizer is None:
        return None
    return max((int(state["step"]) for state in optimizer.state.values()), default=0)


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        run = ours if args.worker == "ours" else nni_side
        out = run(args.strategy, args.level, args.warmup, args.repeats, args.seed)
        out["error"] = None
    except Exception as err:  # reported in the table, not hidden
        out = {"error": f"{type(err).__name__}: {err}"}
    out.update(torch=torch.__version__, threads=torch.get_num_threads(),
               wall_s=time.perf_counter() - started,
               maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(MARK + json.dumps(out), flush=True)


# ---- the parent: runs the workers, writes the table -------------------------------------------
def run_worker(python: Path, side: str, strategy: str, level: str, args: argparse.Namespace,
               warmup: int, repeats: int) -> dict[str, Any]:
    if not python.exists():
        return {"error": f"{python} does not exist (see the set-up lines in this script's "
                         "docstring)"}
    cmd = [str(python), "-m", "benchmarks.bench_nni", "--worker", side, "--strategy", strategy,
           "--level", level, "--warmup", str(warmup), "--repeats", str(repeats),
           "--threads", str(args.threads), "--seed", str(args.seed)]
    # a fixed mmap threshold: tensors over 64 KiB get pages of their own, returned on free,
    # so the resident set follows the live tensors (glibc's default threshold adapts upwards
    # and keeps freed activations resident)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore",
           "MALLOC_MMAP_THRESHOLD_": "65536"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=900)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 900 s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return {"error": f"exit {proc.returncode}: {tail}"}


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU-seconds of the machine, CPU-seconds of this process and its children)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return busy, sum(r.ru_utime + r.ru_stime for r in own)


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one (side, strategy, level): step times pooled, memory medians."""
    good = [r for r in runs if not r.get("error")]
    if not good:
        return {"error": runs[0]["error"]}
    times = [t for r in good for t in r["times"]]
    out = {key: statistics.median(r[key] for r in good)
           for key in ("rss_imported_mb", "rss_before_mb", "step_peak_mb", "maxrss_mb")}
    rounds = [statistics.median(r["times"]) for r in good]
    return {**out, "median": statistics.median(times), "rounds": rounds, "steps": len(times),
            "arch_steps": [r.get("arch_steps") for r in good],
            "first_heldout_loss": good[0]["first_heldout_loss"], "fingerprint":
            good[0]["fingerprint"], "versions": good[0]["versions"], "torch": good[0]["torch"],
            "threads": good[0]["threads"], "failed_rounds": len(runs) - len(good)}


def ratio(a: float, b: float, unit: str = "×") -> str:
    return f"**{a / b:.2f}{unit}**" if b else "n/a"


def render(results: dict, args: argparse.Namespace, mode: str, total: float, others: float
           ) -> str:
    from benchmarks.bench_costs import cpu_model

    time_rows, mem_rows, notes = [], [], []
    for strategy, (our_name, nni_name) in STRATEGIES.items():
        for level in LEVELS:
            o, n = results["ours", strategy, level], results["nni", strategy, level]
            what = (f"{strategy} · {level} (ours `{our_name}`, NNI `{nni_name}`)")
            if o.get("error"):
                time_rows.append(f"| {what} | failed: {o['error']} | | | |")
                mem_rows.append(f"| {what} | failed | | | | | |")
                continue
            spread = "–".join(f"{min(o['rounds']) * 1e3:.1f} {max(o['rounds']) * 1e3:.1f}"
                              .split())
            if n.get("error"):
                time_rows.append(f"| {what} | {o['median'] * 1e3:.1f} ({spread}) "
                                 f"| NNI did not run: {n['error']} | n/a | {o['steps']} |")
                mem_rows.append(f"| {what} | {o['step_peak_mb']:.0f} | n/a "
                                f"| {o['step_peak_mb'] - o['rss_before_mb']:.0f} | n/a "
                                f"| {o['maxrss_mb']:.0f} | n/a |")
                continue
            n_spread = "–".join(f"{min(n['rounds']) * 1e3:.1f} {max(n['rounds']) * 1e3:.1f}"
                                .split())
            time_rows.append(
                f"| {what} | {o['median'] * 1e3:.1f} ({spread}) | {n['median'] * 1e3:.1f} "
                f"({n_spread}) | {ratio(o['median'], n['median'])} | {o['steps']} / "
                f"{n['steps']} |")
            o_rise, n_rise = (r["step_peak_mb"] - r["rss_before_mb"] for r in (o, n))
            mem_rows.append(
                f"| {what} | {o['step_peak_mb']:.0f} / {n['step_peak_mb']:.0f} "
                f"| {ratio(o['step_peak_mb'], n['step_peak_mb'])} "
                f"| {o_rise:.1f} / {n_rise:.1f} | {ratio(o_rise, n_rise) if n_rise > 0 else 'n/a'} "
                f"| {o['maxrss_mb']:.0f} / {n['maxrss_mb']:.0f} "
                f"| {ratio(o['maxrss_mb'], n['maxrss_mb'])} |")
            if o["fingerprint"] != n["fingerprint"]:
                notes.append(f"- **{strategy} · {level}: the initial weights differ** (ours "
                             f"{o['fingerprint']}; NNI {n['fingerprint']})")
            if strategy == "darts":
                notes.append(f"- {strategy} · {level}: architecture steps taken per process "
                             f"(warm-up included), ours {o['arch_steps']}, NNI "
                             f"{n['arch_steps']}: one per training step on both sides")
            if o["first_heldout_loss"] is not None and n["first_heldout_loss"] is not None:
                notes.append(f"- {strategy} · {level}: held-out loss of the first architecture "
                             f"step, ours {o['first_heldout_loss']:.5f}, NNI "
                             f"{n['first_heldout_loss']:.5f} (same weights and batch; "
                             "alpha starts at 0 in ours, at N(0, 1e-3²) in NNI)")
    fingerprints = {r["fingerprint"] for r in results.values() if r.get("fingerprint")}
    imported = {side: statistics.median(r["rss_imported_mb"] for (s, *_), r in results.items()
                                        if s == side and not r.get("error"))
                for side in ("ours", "nni") if any(s == side and not r.get("error")
                                                   for (s, *_), r in results.items())}
    sides = {side: next((r for (s, *_), r in results.items() if s == side and not r.get("error")),
                        None) for side in ("ours", "nni")}
    versions = "; ".join(f"{side}: {r['versions']}, torch {r['torch']}, {r['threads']} threads"
                         for side, r in sides.items() if r)
    return "\n".join([
        "# nas_aug vs NNI 3.0: one search step (DARTS, random one-shot)",
        "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; mode: {mode}; "
        f"{args.rounds} round(s) × {args.warmup} warm-up + {args.repeats} timed steps per "
        f"process; total runtime {total:.0f} s",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores), "
        f"**torch.set_num_threads({args.threads})** and OMP_NUM_THREADS={args.threads} in every "
        f"process; Python {platform.python_version()}",
        f"- Versions: {versions}",
        f"- The machine was shared: other processes used {others:.1f} CPU-s during the run "
        f"({others / total:.2f} cores on average); they skew timings, the medians resist but "
        "do not remove that noise",
        f"- Space: stem conv 3x3 → {CELLS} cells, each a layer choice among {', '.join(OPS)} "
        f"({CHANNELS} channels, stride 1; convolutions ReLU-conv-BN as DARTS's) → global pool "
        f"→ linear; {len(OPS)}^{CELLS} = {len(OPS) ** CELLS} architectures. Initial weights "
        + ("identical on both sides (" + next(iter(fingerprints)) + ")"
           if len(fingerprints) == 1 else "checked per row below") + ".",
        f"- Data: scikit-learn digits, bilinear-upsampled to 1x{SIZE}x{SIZE}, batch {BATCH}; "
        f"the first {N_TRAIN} images train the weights, the other 517 are the held-out batches "
        f"of the architecture step. Weights: SGD lr {WEIGHT_LR}, momentum 0.9, wd 3e-4. "
        "Architecture: each library's own Adam (ours lr 1e-2 + beta-decay 0.01, NNI lr 3e-4; "
        "the learning rate does not change the cost of a step).",
        "",
        "## Time per search step (median ms, range of the per-round medians in brackets)",
        "",
        "DARTS step = one first-order architecture step on a held-out batch + one weight step on "
        "a training batch. Random step = sample one path uniformly + one weight step. "
        "**step** = the step in plain torch (ours: `DARTS.architecture_step` under "
        "`preserved_buffers` with the loss under `mixed(...)`, then `set_mixing` and the "
        "weight step, as `OneShotNAS`'s DARTS outer step does; NNI: `DARTS().mutate_model` and "
        "the body of `DartsLightningModule.training_step` / `resample()` + weight step). "
        "**fit** = a Lightning fit, time between successive `on_train_batch_end` hooks (ours: "
        "`Trainer(callbacks=[OneShotNAS(...)])`; NNI: `strategy.mutate_evaluator(Lightning(...))"
        ".evaluate(strategy.mutate_model(space))`, what `NasExperiment` runs for a one-shot "
        "strategy). ours ÷ NNI below 1 means ours is faster.",
        "",
        "| strategy · level | ours ms | NNI ms | ours ÷ NNI | steps timed (ours / NNI) |",
        "|---|---:|---:|---:|---:|",
        *time_rows,
        "",
        "## Memory (resident set, MB; ours / NNI, median over rounds)",
        "",
        "Peak in steps = `VmHWM` over the timed steps after resetting it just before them "
        "(`echo 5 > /proc/self/clear_refs`): the whole process, libraries and model included. "
        "Rise = that peak minus `VmRSS` just before the timed steps: what the steps themselves "
        "hold at their peak (graphs, activations, gradients; with the fixed mmap threshold in "
        "the notes, close to the peak of live tensors). Process peak = `ru_maxrss`, "
        "imports and set-up included (ours builds its fvcore cost table in `OneShotNAS.setup`)."
        " RSS just after the imports: "
        + ", ".join(f"{side} {mb:.0f} MB" for side, mb in imported.items()) + ".",
        "",
        "| strategy · level | peak in steps | ours ÷ NNI | rise in steps | ours ÷ NNI "
        "| process peak | ours ÷ NNI |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *mem_rows,
        "",
        "## Checks and notes",
        "",
        *(notes or ["- (nothing to check: a side did not run)"]),
        f"- {args.threads} torch thread(s) per process, not the suite's 2: while other "
        "processes ran on the 2 cores, a 2-thread convolution step took ~20× longer than a "
        "1-thread one (OpenMP threads waiting for a core; seen here: conv 5x5 forward + "
        "backward, batch 64x16x16x16, 95 ms with 2 threads, 4.5 ms with 1).",
        "- The worker processes run with `MALLOC_MMAP_THRESHOLD_=65536`, so tensors over 64 KiB "
        "are mapped and unmapped on their own and the resident set follows the live tensors "
        "(glibc's adaptive threshold would keep freed activations resident).",
        "- NNI's DARTS steps two optimizers per batch and Lightning counts each as a global "
        "step, so `Trainer(max_steps=N)` stops NNI after N/2 batches: both fits run "
        "`limit_train_batches` instead.",
        "- The cells sit in an `nn.Sequential`. In an `nn.ModuleList` iterated by the parent's "
        "`forward`, `OneShotNAS` fails in `setup`: `CostTable.build` skips modules that never "
        "ran a forward of their own (the `ModuleList`), so none of the cells is tabulated and "
        "its own check raises `cost table gives 0.049M MACs, 0.3K params but counting the whole "
        "sub-network gives 2.441M MACs, 9.7K params`.",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, one round: smoke run")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nni-python", type=Path, default=ROOT / ".venv-nni" / "bin" / "python")
    parser.add_argument("--worker", choices=("ours", "nni"), help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=tuple(STRATEGIES), help=argparse.SUPPRESS)
    parser.add_argument("--level", choices=LEVELS, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    args.rounds, args.warmup, args.repeats = (1, 3, 8) if args.quick else (3, 10, 40)
    pythons = {"ours": ROOT / ".venv" / "bin" / "python", "nni": args.nni_python}
    start, (busy0, own0) = time.perf_counter(), cpu_seconds()
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for strategy in STRATEGIES:
            for level in LEVELS:
                order = ("ours", "nni") if r % 2 == 0 else ("nni", "ours")
                for side in order:
                    result = run_worker(pythons[side], side, strategy, level, args, args.warmup,
                                        args.repeats)
                    runs.setdefault((side, strategy, level), []).append(result)
                    shown = (result["error"] if result.get("error") else
                             f"{statistics.median(result['times']) * 1e3:.1f} ms/step")
                    print(f"round {r + 1}: {side} {strategy} {level}: {shown}", file=sys.stderr,
                          flush=True)
    total = time.perf_counter() - start
    busy, own = cpu_seconds()
    others = max(0.0, (busy - busy0) - (own - own0))
    results = {key: merged(value) for key, value in runs.items()}
    mode = "quick (smoke run: few steps, numbers are rough)" if args.quick else "full"
    text = render(results, args, mode, total, others)
    from benchmarks.bench_costs import write_atomic

    write_atomic(args.out, text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
