"""Warm start vs cold start of a one-shot search on a timm model, written to
``results/warm_start.md``.

A plain timm model is trained (the "pretrained" original, held-out top-1 ``A``); then two
supernet fits run with ``OneShotNAS(elastic=ElasticSpec(...))``, the same space, sampling,
optimizer, schedule, data order and seeds: *warm* converts a copy of the trained model (its
largest sub-network is the original, with its weights), *cold* converts the same architecture
freshly initialised. Every few steps the held-out top-1 of a fixed panel of sub-networks
(largest, smallest, three seeded random ones; batch norm recalibrated on fixed training batches,
as ``OneShotNAS`` scores) is measured; the table gives the steps and training wall time (the
fit's, evaluation excluded) until each reaches the target ``fraction * A``, and the searched
sub-network at the end. The plain training of the original is given alongside, for scale.

    python -m benchmarks.bench_warm_start [--quick] [--out PATH] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import platform
import random
import time
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import timm
import torch

from benchmarks.bench_costs import cpu_model, cpu_seconds, write_atomic
from nas_aug import ElasticSpec
from nas_aug.callbacks import OneShotNAS
from nas_aug.classifier import ImageClassifier
from nas_aug.data import DigitsDataModule, FashionMNISTDataModule
from nas_aug.strategies.evaluation import recalibrate_batch_norm, top1_accuracy
from nas_aug.supernet import activate, space_of

SEED = 0
MODEL = "mobilenetv3_small_050"
SPEC = ElasticSpec(width=(0.5, 0.75, 1.0), kernel=(3, 5), depth=True)
PANEL = ("largest", "smallest", "random 1", "random 2", "random 3")
LR = 5e-3  # ImageClassifier's default: AdamW (weight decay 1e-4), cosine over the fit's steps


@dataclass(frozen=True)
class Mode:
    train_fraction: float  # of Fashion-MNIST's 54000 training images (after the held-out 6000)
    heldout_images: int  # scored at every evaluation
    pretrain_steps: int  # plain training of the original
    search_steps: int  # each supernet fit (warm and cold alike)
    every: int  # evaluate the panel every this many steps (and before the first)
    population: int  # OneShotNAS's evolution after the fit: population x generations
    generations: int


MODES = {"quick": Mode(train_fraction=0.05, heldout_images=500, pretrain_steps=200,
                       search_steps=200, every=20, population=4, generations=2),
         "full": Mode(train_fraction=0.2, heldout_images=2000, pretrain_steps=1000,
                      search_steps=1000, every=50, population=8, generations=4)}


class Probe(pl.Callback):
    """Held-out top-1 of a fixed panel of sub-networks before the first step and every
    ``every`` steps, and the fit's wall time so far with these evaluations left out."""

    def __init__(self, calibration: list[torch.Tensor], heldout: list[Any], every: int):
        self.calibration, self.heldout, self.every = calibration, heldout, every
        # (step, wall seconds, CPU seconds of this process, scores)
        self.curve: list[tuple[int, float, float, dict[str, float]]] = []
        self.train_seconds = self.train_cpu = 0.0
        self._panel: dict[str, dict] = {}
        self._clock = self._cpu_clock = 0.0

    def _evaluate(self, step: int, pl_module: pl.LightningModule) -> None:
        scores = {}
        with torch.random.fork_rng(devices=[]):  # leaves the fit's random stream alone
            for name, sample in self._panel.items():
                activate(pl_module, sample)
                recalibrate_batch_norm(pl_module, pl_module, self.calibration)
                pl_module.eval()
                scores[name] = top1_accuracy(pl_module, self.heldout)
        pl_module.train()
        self.curve.append((step, self.train_seconds, self.train_cpu, scores))

    def on_train_start(self, trainer, pl_module):
        space = space_of(pl_module)  # after OneShotNAS's setup made the model elastic
        rng = random.Random(SEED)
        self._panel = {"largest": space.largest()}
        if space.labels:
            self._panel["smallest"] = space.smallest()
            self._panel.update({name: space.random(rng) for name in PANEL[2:]})
        self._evaluate(0, pl_module)
        self._clock, self._cpu_clock = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_seconds += time.perf_counter() - self._clock
        self.train_cpu += time.process_time() - self._cpu_clock
        if trainer.global_step % self.every == 0:
            self._evaluate(trainer.global_step, pl_module)
        self._clock, self._cpu_clock = time.perf_counter(), time.process_time()

    def first_reaching(self, target: float, key: str) -> tuple[int, float, float] | None:
        """(steps, wall seconds, CPU seconds) of training at the first evaluation where
        ``key`` (a panel name, or ``"mean"`` over the panel) is at least ``target``; ``None``
        if none is."""
        for step, seconds, cpu, scores in self.curve:
            value = sum(scores.values()) / len(scores) if key == "mean" else scores.get(key)
            if value is not None and value >= target:
                return step, seconds, cpu
        return None


def fit(module: pl.LightningModule, datamodule, steps: int, callbacks: list) -> None:
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1,
                         callbacks=callbacks, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, datamodule)


def datamodule(mode: Mode, data: str) -> pl.LightningDataModule:
    if data == "fashion":
        dm = FashionMNISTDataModule(batch_size=64, train_fraction=mode.train_fraction,
                                    seed=SEED)
    else:  # scikit-learn's digits upscaled, where Fashion-MNIST is not installed
        dm = DigitsDataModule(batch_size=64, img_size=32, seed=SEED)
    dm.setup()
    return dm


def fresh_model(shape: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return timm.create_model(MODEL, pretrained=False, num_classes=10, in_chans=shape[0])


def run(mode: Mode, data: str) -> dict[str, Any]:
    dm = datamodule(mode, data)
    shape = tuple(dm.input_shape)
    calibration = [x for x, _ in islice(dm.train_dataloader(), 4)]  # fixed: epoch 0's first
    heldout = list(dm.val_dataloader())
    heldout_n = min(mode.heldout_images, sum(len(y) for _, y in heldout))
    x = torch.cat([b[0] for b in heldout])[:heldout_n]
    y = torch.cat([b[1] for b in heldout])[:heldout_n]
    heldout = list(zip(x.split(250), y.split(250)))

    out: dict[str, Any] = {"shape": shape, "sizes": dm.sizes, "heldout_n": heldout_n}
    pl.seed_everything(SEED, verbose=False)
    original = ImageClassifier(fresh_model(shape), lr=LR)
    plain = Probe(calibration, heldout, mode.every)
    fit(original, dm, mode.pretrain_steps, [plain])
    out["plain"] = {"probe": plain}
    out["A"] = plain.curve[-1][-1]["largest"]

    for start in ("warm", "cold"):
        net = copy.deepcopy(original.net) if start == "warm" else fresh_model(shape)
        pl.seed_everything(SEED + 1, verbose=False)
        module = ImageClassifier(net, lr=LR)
        probe = Probe(calibration, heldout, mode.every)
        nas = OneShotNAS(elastic=SPEC, input_shape=shape, population_size=mode.population,
                         generations=mode.generations, calibration_batches=4,
                         progress=False, seed=SEED)
        fit(module, dm, mode.search_steps, [nas, probe])
        out[start] = {"probe": probe, "result": nas.result, "labels": len(nas.space.labels),
                      "largest_macs": nas.cost_table(nas.space.largest()).macs}
    return out


Reached = tuple[int, float, float] | None  # (steps, wall s, CPU s) or never


def _steps(reached: Reached, limit: int) -> str:
    return f"> {limit}" if reached is None else f"{reached[0]}"


def _seconds(reached: Reached) -> str:
    return "–" if reached is None else f"{reached[1]:.1f} s"


def _ratio(cold: Probe, warm: Probe, target: float, key: str, index: int) -> str:
    """cold ÷ warm to reach ``target``, in steps (index 0), wall seconds (1) or CPU seconds
    (2); a lower bound (the cold fit's whole length) where the cold fit never reached it."""
    w, c = warm.first_reaching(target, key), cold.first_reaching(target, key)
    digits = 0 if index == 0 else 1
    if w is None:
        return "warm never reached it"
    cold_value = c[index] if c is not None else (
        cold.curve[-1][0], cold.train_seconds, cold.train_cpu)[index]
    bound, never = ("", "") if c is not None else ("> ", ", cold never reached it")
    if w[index] == 0:
        return (f"∞ (warm: at the target before its first step; cold: "
                f"{bound}{cold_value:.{digits}f})")
    return (f"{bound}{cold_value / w[index]:.1f}× ({bound}{cold_value:.{digits}f} ÷ "
            f"{w[index]:.{digits}f}{never})")


def _notes(out: dict[str, Any], target: float, mode: Mode) -> list[str]:
    """What this run's numbers say beyond the ratios, as bullet lines."""
    plain, warm, cold = (out[k]["probe"] for k in ("plain", "warm", "cold"))
    low_step, *_, low = min(warm.curve[1:], key=lambda point: point[-1]["largest"])
    lines = [f"- The warm fit's largest sub-network (the original) scores {out['A']:.3f} "
             f"before the first step, {low['largest']:.3f} at its lowest (step {low_step}) and "
             f"{warm.curve[-1][-1]['largest']:.3f} at the end"
             + (" (likely because the supernet fit starts a fresh optimizer at the schedule's "
                "peak rate and trains randomly sampled smaller paths on the shared weights: "
                "the warm start is not kept for free)." if low["largest"] < out["A"] else ".")]
    p, c = plain.first_reaching(target, "largest"), cold.first_reaching(target, "largest")
    if p is not None:
        lines.append(f"- For scale: plain training of the original (no supernet) first reached "
                     f"{target:.3f} at step {p[0]}; the cold supernet's largest path at "
                     + (f"step {c[0]}" if c else f"none of its {mode.search_steps} steps")
                     + " (a step trains one random path, not the largest).")
    w = warm.first_reaching(target, "mean")
    lines.append(
        f"- The warm fit's cost leaves out the {mode.pretrain_steps} steps of plain training "
        "that made the original: the warm start pays off when the trained model is given, as "
        "a pretrained model is"
        + (f" (counting them, the warm panel mean needs {mode.pretrain_steps + w[0]} steps)."
           if w is not None else "."))
    return lines


def render(mode_name: str, mode: Mode, data: str, fraction: float, out: dict[str, Any],
           threads: int, total: float, others: float) -> str:
    target = fraction * out["A"]
    limit = mode.search_steps
    rows, ratios, curve_rows = [], [], []
    for start in ("plain", "cold", "warm"):
        probe = out[start]["probe"]
        keys = ("largest",) if start == "plain" else ("largest", "mean", "smallest")
        reached = {k: probe.first_reaching(target, k) for k in ("largest", "mean", "smallest")}
        end = probe.curve[-1][-1]
        cells = []
        for k in ("largest", "mean", "smallest"):
            lim = mode.pretrain_steps if start == "plain" else limit
            cells += ([_steps(reached[k], lim), _seconds(reached[k])] if k in keys
                      else ["–", "–"])
        if start == "plain":
            found = f"(the original: {out['A']:.3f})"
        else:
            result = out[start]["result"]
            found = (f"{result.score:.3f} at {result.chosen.macs / 1e6:.2f}M MACs "
                     f"(largest {out[start]['largest_macs'] / 1e6:.2f}M; "
                     f"{len(result.candidates)} candidates scored in "
                     f"{result.cost['search_seconds']:.0f} s)")
        mean_end = sum(end.values()) / len(end)
        name = {"plain": "plain training of the original (no supernet), from scratch",
                "cold": "supernet fit, **cold** (fresh initialisation)",
                "warm": "supernet fit, **warm** (elasticized trained original)"}[start]
        steps_run = mode.pretrain_steps if start == "plain" else limit
        rows.append(f"| {name} | {' | '.join(cells)} | {end['largest']:.3f} | "
                    + (f"{mean_end:.3f} | {end.get('smallest', float('nan')):.3f}"
                       if start != "plain" else "– | –")
                    + f" | {found} | {steps_run} steps, {probe.train_seconds:.0f} s |")
    warm, cold = out["warm"]["probe"], out["cold"]["probe"]
    for key, what in (("mean", "panel mean"), ("smallest", "smallest sub-network"),
                      ("largest", "largest sub-network")):
        ratios.append(f"| {what} | " + " | ".join(_ratio(cold, warm, target, key, index)
                                                  for index in range(3)) + " |")
    for (step, *_, ws), (*_, cs) in zip(warm.curve, cold.curve):
        curve_rows.append(f"| {step} | {cs['largest']:.3f} | {ws['largest']:.3f} | "
                          f"{sum(cs.values()) / len(cs):.3f} | {sum(ws.values()) / len(ws):.3f} | "
                          f"{cs['smallest']:.3f} | {ws['smallest']:.3f} |")
    notes = _notes(out, target, mode)
    sizes = out["sizes"]
    dataset = (f"Fashion-MNIST {out['shape']} (train_fraction={mode.train_fraction}: "
               f"{sizes['train']} training images)" if data == "fashion" else
               f"scikit-learn's digits upscaled to {out['shape']} ({sizes['train']} training "
               "images)")
    mode_text = ("quick (smoke run: short fits, few evaluations; numbers are rough)"
                 if mode_name == "quick" else "full")
    return "\n".join([
        "# Warm start vs cold start: a supernet search from a trained timm model",
        "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; mode: {mode_text}; "
        f"total runtime {total:.0f} s",
        f"- torch {torch.__version__}, timm {timm.__version__}, Python "
        f"{platform.python_version()}, CPU: {cpu_model()} ({os.cpu_count()} logical cores, "
        f"**shared** with other work), **torch.set_num_threads({threads})**",
        f"- Other processes used {others:.1f} CPU-s during the run ({others / total:.2f} cores on "
        "average): wall times are skewed by them; step counts are not",
        f"- Model: timm `{MODEL}` (in_chans={out['shape'][0]}, 10 classes), made elastic by "
        f"`OneShotNAS(elastic={SPEC})` in the fit's setup: {out['warm']['labels']} labels. "
        f"Data: {dataset}; held-out: the first {out['heldout_n']} images of the datamodule's "
        "held-out split. Batch 64, `ImageClassifier` (AdamW lr "
        f"{LR}, weight decay 1e-4, cosine over the fit's steps), the same for every fit; "
        "uniform path sampling (SPOS, `OneShotNAS`'s default); seeds fixed (model init, data "
        "order, paths), so warm and cold see the same batches and the same paths.",
        f"- Target: {fraction:g} × the original's held-out top-1 A = {fraction:g} × "
        f"{out['A']:.3f} = **{target:.3f}**. Evaluated before the first step and every "
        f"{mode.every} steps (so step counts have that resolution): the held-out top-1 of a "
        "fixed panel of sub-networks (largest, smallest, three seeded random ones), batch norm "
        "recalibrated on 4 fixed training batches for each (as `OneShotNAS` scores). Seconds "
        "= the fit's wall time up to that step with these evaluations left out (data loading, "
        "path sampling, forward, backward, optimizer); CPU time = this process's CPU seconds "
        "over the same spans (less sensitive than wall time to the machine's other work). The "
        "one-time cost table (fvcore) is built in `setup`, outside them, and so is the search "
        "after the fit. The plain fit trains the original; its A is measured the same way at "
        "its end.",
        "",
        f"## Steps (and seconds) to reach {target:.3f}",
        "",
        "| fit | largest: steps | s | panel mean: steps | s | smallest: steps | s "
        "| largest at end | panel mean at end | smallest at end "
        "| searched sub-network at end (held-out top-1) | fit length |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        *rows,
        "",
        "## Warm-start ratio: cold ÷ warm, same space and schedule, this run",
        "",
        "| reaching the target | steps | wall time | CPU time (this process) |",
        "|---|---:|---:|---:|",
        *ratios,
        "",
        *notes,
        "",
        "## Held-out top-1 along the fits",
        "",
        "| step | largest, cold | largest, warm | panel mean, cold | panel mean, warm "
        "| smallest, cold | smallest, warm |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *curve_rows,
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short fits: a smoke run")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "warm_start.md")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: tiny convs on a shared 2-core machine)")
    parser.add_argument("--fraction", type=float, default=0.9,
                        help="target = this fraction of the original's held-out top-1")
    parser.add_argument("--data", choices=("fashion", "digits"), default=None,
                        help="default: Fashion-MNIST where installed, else digits at 32x32")
    args = parser.parse_args()
    if args.data is None:
        try:
            FashionMNISTDataModule(train_fraction=0.01).load_arrays()
            args.data = "fashion"
        except FileNotFoundError:
            args.data = "digits"
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    warnings.filterwarnings("ignore", message=".*(torch.jit|does not have many workers|"
                                              "isinstance\\(treespec).*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    start, (busy0, own0) = time.perf_counter(), cpu_seconds()
    out = run(mode, args.data)
    total = time.perf_counter() - start
    busy, own = cpu_seconds()
    others = max(0.0, (busy - busy0) - (own - own0))
    text = render(mode_name, mode, args.data, args.fraction, out, args.threads, total, others)
    write_atomic(args.out, text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
