"""GPU check: one run on one GPU (at most 8 minutes on an H100/H200) that writes one markdown file.

1. Augmentation throughput: ``PolicyAugment`` vs Kornia's own ``kornia.augmentation.auto``
   RandAugment / AutoAugment / TrivialAugment on 3x32x32 photo crops in batches of 256, fp32 and
   bf16 (``n/a (reason)`` where a path refuses a dtype): images/s and ours / Kornia.
2. ``OneShotNAS`` (SPOS uniform and sandwich) in a fit on digits: the sub-network rebuilt on the
   CPU against the supernet on the device (TF32 off), and the energy of the search's cost record.
3. ``AugmentSearch`` (dada, randaugment) in a short fit of the quality benchmark's fixed network
   on Fashion-MNIST: seconds, the policy found, held-out and test top-1.
4. Every registered NAS strategy (SPOS in each sampling) in a short ``OneShotNAS`` fit with the
   pieces of ``recipes/fashion_mnist_spos.yaml``: the supernet's training step in the fit against
   the extracted winner's step in a plain torch loop on the same batch.

Sections 3 and 4 need the four Fashion-MNIST idx files in ``--root`` and say so where they are
missing. ``--device cpu --tiny`` is the CPU smoke setting (tiny sizes, a few steps). A check that
fails (parity, device) is marked in the table and makes the script exit non-zero once written.

    python -m benchmarks.gpu_check OUT.md [--device cuda|cpu] [--tiny] [--root DIR]
        [--sections augment,digits,policy,nas]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import os
import platform
import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import lightning.pytorch as pl
import torch

from benchmarks.bench_augment import BATCH, POLICIES, on_batches, photo_crops
from benchmarks.bench_augment_quality import BATCH as AUGMENT_BATCH
from benchmarks.bench_augment_quality import describe, fixed_network
from benchmarks.bench_costs import cpu_model, cpu_seconds, interleaved_times, train_step
from benchmarks.bench_quality import RECIPE
from benchmarks.run import BUDGET, SHAPE, SPACE, SPACE_KWARGS
from nas_aug import build_subnet, load_architecture
from nas_aug.augment import Policy, PolicyAugment
from nas_aug.callbacks import AugmentSearch, OneShotNAS
from nas_aug.classifier import ImageClassifier
from nas_aug.data import DigitsDataModule, FashionMNISTDataModule
from nas_aug.data.fashion_mnist import DEFAULT_ROOT
from nas_aug.io import atomic_write
from nas_aug.recipe import Recipe, make_datamodule, make_search
from nas_aug.search_spaces import create_space
from nas_aug.strategies import SAMPLINGS, STRATEGIES

SEED = 0
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gpu_check.md"
SECTIONS = {"augment": "1. Augmentation throughput", "digits": "2. OneShotNAS on digits",
            "policy": "3. AugmentSearch on Fashion-MNIST",
            "nas": "4. Every NAS strategy on Fashion-MNIST: supernet step vs standalone"}


@dataclass(frozen=True)
class Setting:
    images: int  # 1: images per timed pass, in batches of 256
    passes: int  # 1: timed passes per path (after one untimed)
    digits_epochs: int  # 2: the digits fits
    population: int  # 2, 4: evolution's population and generations
    generations: int
    policy_epochs: int  # 3: the AugmentSearch fits
    policy_fraction: float  # 3: share of Fashion-MNIST's training images trained on
    nas_epochs: int  # 4: each strategy's fit
    nas_fraction: float
    nas_batch: int  # 4: batch of the fit and of the standalone loop (recipe: 128)
    heldout_fraction: float  # 3, 4: of the 60000 training images
    test_fraction: float  # 3: of the 10000 test images
    standalone_steps: int  # 4: timed standalone steps (after 3 untimed)


SETTINGS = {
    "full": Setting(images=2048, passes=7, digits_epochs=10, population=8, generations=3,
                    policy_epochs=5, policy_fraction=0.1, nas_epochs=3, nas_fraction=0.1,
                    nas_batch=128, heldout_fraction=0.05, test_fraction=0.2,
                    standalone_steps=50),
    "tiny": Setting(images=256, passes=2, digits_epochs=1, population=4, generations=1,
                    policy_epochs=2, policy_fraction=0.003, nas_epochs=1, nas_fraction=0.004,
                    nas_batch=32, heldout_fraction=0.004, test_fraction=0.02,
                    standalone_steps=3),
}


def failed(what: str, error: Exception, failures: list[str]) -> str:
    """Record ``what`` as failed (its traceback on stderr) and say so for the table."""
    traceback.print_exc()
    failures.append(f"{what}: {type(error).__name__}: {error}")
    return f"**failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}**"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(step: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``step`` followed by a device synchronisation, so that timing it times its kernels."""
    def run() -> None:
        step()
        synchronize(device)

    return run


def trainer(device: torch.device, epochs: int, callbacks=()) -> pl.Trainer:
    """A quiet fit on ``device``: no logger, checkpoints, progress bar or sanity check."""
    return pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                      max_epochs=epochs, callbacks=list(callbacks), logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)


def first_error(calls: list[Callable[[], object]]) -> str | None:
    """``type: message`` of the first call that raises (its first line), or ``None``."""
    for call in calls:
        try:
            call()
        except Exception as error:  # any refusal (dtype, kernel) becomes the cell's reason
            return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return None


# ---- 1. augmentation throughput ----------------------------------------------------------
def cast(module: torch.nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` applied to a batch cast to ``dtype``."""
    return lambda batch: module(batch.to(dtype))


def augment_throughput(device: torch.device, setting: Setting) -> list[str]:
    """Rows: per policy and dtype, images/s of ours and of Kornia's own policy, and the ratio."""
    crops, source = photo_crops(setting.images)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().to(device)
    rows = []
    for name, (policy, kornia_own) in POLICIES.items():
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(SEED)
            modules = {"ours": PolicyAugment(policy, seed=SEED),
                       "kornia": kornia_own().to(device)}
            paths, refused = {}, {}
            for side, module in modules.items():
                run = synced(on_batches(cast(module, dtype), images), device)
                batch = images[:BATCH].to(dtype) / 255
                # kornia draws one sub-policy per batch: try each, so none fails while timed
                subs = [] if side == "ours" else [functools.partial(sub, batch)
                                                  for sub in module.children()]
                reason = first_error([*subs, run])
                if reason is None:
                    paths[side] = run
                else:
                    refused[side] = reason
            times = interleaved_times(paths, setting.passes, warmup=1)
            rate = {side: len(images) / statistics.median(seconds)
                    for side, seconds in times.items()}
            cells = [f"{rate[side]:,.0f}" if side in rate else f"n/a ({refused[side]})"
                     for side in modules]
            ratio = f"{rate['ours'] / rate['kornia']:.2f}×" if len(rate) == 2 else "-"
            rows.append(f"| {name} | {str(dtype).removeprefix('torch.')} | {' | '.join(cells)} "
                        f"| {ratio} |")
    kornia = f"kornia {version('kornia')}"
    return [f"3x32x32 images: {source}; {len(images)} images per pass in batches of {BATCH}, "
            f"uint8 on the device converted to float / 255 (bf16: then cast, the cast timed); "
            f"images/s = {len(images)} ÷ the median of {setting.passes} timed passes after one "
            f"untimed, the paths taking turns, the device synchronised after each pass. Ours "
            f"draws ops per sample, {kornia}'s `auto` policies one sub-policy per batch.", "",
            "| policy | dtype | ours: PolicyAugment, images/s | Kornia's own auto policy, "
            "images/s | ours ÷ Kornia |", "|---|---|---:|---:|---:|", *rows]


# ---- 2. OneShotNAS on digits: parity and energy ------------------------------------------
def digits_check(device: torch.device, setting: Setting, work: Path, failures: list[str]
                 ) -> list[str]:
    """Per SPOS sampling: fit + search + export seconds, the winner, CPU-vs-device parity of its
    outputs and the energy figure of ``OneShotNAS``'s cost record."""
    rows = []
    for sampling in ("uniform", "sandwich"):
        pl.seed_everything(SEED, verbose=False)
        model = ImageClassifier(create_space(SPACE, **SPACE_KWARGS))
        export = work / f"digits_{sampling}"
        nas = OneShotNAS(budget=BUDGET, export_dir=export, overwrite=True, sampling=sampling,
                         progress=False, seed=SEED, population_size=setting.population,
                         generations=setting.generations)
        started = time.perf_counter()
        trainer(device, setting.digits_epochs, [nas]).fit(model, datamodule=DigitsDataModule())
        seconds = time.perf_counter() - started
        cost, result = nas.result.cost, nas.result
        subnet = build_subnet(load_architecture(export)).eval()
        x = torch.rand(64, *SHAPE, device=device)
        model.to(device).eval()  # Lightning hands the module back on the CPU after the fit
        tf32, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        with torch.no_grad():  # TF32 convolutions differ from the CPU by ~1e-3
            diff = (subnet(x.cpu()) - model(x).cpu()).abs().max().item()
        torch.backends.cudnn.allow_tf32 = tf32
        checks = []
        if diff >= 1e-3:
            checks.append(f"parity {diff:.2e} ≥ 1e-3")
        if not cost["device"].startswith(device.type):
            checks.append(f"ran on {cost['device']}, not {device.type}")
        failures += [f"digits {sampling}: {check}" for check in checks]
        rows.append(f"| {sampling} | {seconds:.1f} | {cost['train_seconds']:.1f} | "
                    f"{cost['search_seconds']:.1f} | {result.chosen.macs:,} | {result.score:.4f} "
                    f"| {len(result.candidates)} | {cost['device']} | {diff:.2e} "
                    f"{'ok' if not checks else '**FAILED: ' + '; '.join(checks) + '**'} | "
                    f"{cost['energy_kwh'] * 1000:.3f} Wh by {cost['method']} |")
    return [f"`{SPACE}` with `{SPACE_KWARGS}`, {BUDGET}, scikit-learn's digits, "
            f"{setting.digits_epochs} epoch(s), evolution {setting.population} x "
            f"{setting.generations}. Parity: max |sub-network rebuilt on the CPU - supernet on "
            "the device| over 64 random inputs, fp32, TF32 off, must be below 1e-3.", "",
            "| sampling | fit + search + export s | train s | search s | winner MACs | "
            "held-out top-1 | candidates | ran on | parity | energy |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|", *rows]


# ---- 3. AugmentSearch on Fashion-MNIST ---------------------------------------------------
def policy_search(device: torch.device, setting: Setting, data: FashionMNISTDataModule
                  ) -> list[str]:
    """Per method: the fit's seconds, the policy found, held-out and test top-1."""
    rows = []
    for method in ("dada", "randaugment"):
        pl.seed_everything(SEED, verbose=False)
        search = AugmentSearch(method=method, seed=SEED)
        model = ImageClassifier(fixed_network(data.num_classes))
        fit = trainer(device, setting.policy_epochs, [search])
        started = time.perf_counter()
        fit.fit(model, datamodule=data)
        seconds = time.perf_counter() - started
        heldout = fit.validate(model, datamodule=data, verbose=False)[0]["val_acc"]
        test = fit.test(model, datamodule=data, verbose=False)[0]["test_acc"]
        found = describe(Policy.from_json(search.result["policy"]))
        rows.append(f"| {method} | {seconds:.1f} | {found} | {heldout:.4f} | {test:.4f} |")
    sizes = data.sizes
    return [f"The quality benchmark's fixed 3-conv network in `ImageClassifier`, Fashion-MNIST "
            f"28x28 ({sizes['train']} training, {sizes['heldout']} held-out, {sizes['test']} "
            f"test images), batch {data.batch_size}, {setting.policy_epochs} epochs; the "
            "search's outer objective is the held-out split; top-1 of the model the fit left.",
            "", "| method | fit s | policy found | held-out top-1 | test top-1 |",
            "|---|---:|---|---:|---:|", *rows]


# ---- 4. every NAS strategy on Fashion-MNIST ----------------------------------------------
class StepTimer(pl.Callback):
    """Seconds between consecutive training-batch starts within an epoch (the whole step: the
    strategy's sampling and outer step, the batch's loading and transfer), synchronised."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._last = device, [], None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        if self._last is not None:
            self.seconds.append(now - self._last)
        self._last = now


def standalone_step(export: Path, batch, lr: float, device: torch.device, steps: int) -> float:
    """Median seconds of the exported sub-network's training step (channels_last, AdamW) in a
    plain torch loop on ``batch``."""
    subnet = build_subnet(load_architecture(export)).to(device, memory_format=torch.channels_last)
    x, y = (t.to(device) for t in batch)
    step = synced(lambda: train_step(subnet.train(), torch.optim.AdamW(subnet.parameters(), lr),
                                     x.contiguous(memory_format=torch.channels_last), y), device)
    return statistics.median(interleaved_times({"step": step}, steps, warmup=3)["step"])


def strategy_row(label: str, overrides: list[str], device: torch.device, setting: Setting,
                 data: pl.LightningDataModule, batch, export: Path) -> str:
    """One strategy's fit (``recipes/fashion_mnist_spos.yaml`` with ``overrides``) as a row."""
    run = Recipe.from_yaml(RECIPE, overrides)
    pl.seed_everything(SEED, verbose=False)
    model, callbacks = make_search(run, export, overwrite=True, progress=False)
    timer = StepTimer(device)
    started = time.perf_counter()
    trainer(device, run.supernet.epochs, [timer, *callbacks]).fit(model, datamodule=data)
    seconds = time.perf_counter() - started
    result = callbacks[0].result
    supernet = statistics.median(timer.seconds)
    alone = standalone_step(export, batch, run.supernet.lr, device, setting.standalone_steps)
    return (f"| {label} | {supernet * 1e3:.2f} | {alone * 1e3:.2f} | {supernet / alone:.2f}× | "
            f"{len(timer.seconds)} | {seconds:.1f} | {result.chosen.macs:,} | "
            f"{result.score:.4f} |")


def nas_strategies(device: torch.device, setting: Setting, recipe: Recipe,
                   data: pl.LightningDataModule, work: Path, failures: list[str]) -> list[str]:
    """Per registered strategy (SPOS once per sampling): the supernet's median step in the fit
    against the winner's standalone step; a strategy that fails gets a row saying so."""
    runs = [(name, [f"supernet.sampling={sampling}"] if sampling else [])
            for name in STRATEGIES.names()
            for sampling in (SAMPLINGS.names() if name == "spos" else [None])]
    batch = next(iter(data.train_dataloader()))
    rows = []
    for index, (name, extra) in enumerate(runs):
        label = name + "".join(f" ({item.split('=')[1]})" for item in extra)
        try:
            rows.append(strategy_row(label, [*recipe_overrides(setting, name), *extra], device,
                                     setting, data, batch, work / f"nas_{index}"))
        except Exception as error:  # the other strategies still run
            rows.append(f"| {label} | {failed(f'strategy {label}', error, failures)} "
                        "| | | | | | |")
    sizes = data.sizes
    return [f"`{RECIPE.name}`'s data, space and budget ({recipe.space.name} "
            f"`{recipe.space.kwargs}`, {recipe.search.budget.macs:,.0f} MACs, 16x16), scaled "
            f"down: {sizes['train']} training and {sizes['heldout']} held-out images, batch "
            f"{setting.nas_batch}, {setting.nas_epochs} epoch(s), evolution "
            f"{setting.population} x {setting.generations} for the strategies that search. "
            "Supernet step: median time between consecutive training steps inside the fit "
            "(Lightning, data loading, the strategy's sampling and outer step included; SPOS "
            "sandwich trains several paths per step). Standalone: the exported winner with its "
            f"weights in a plain loop (channels_last, AdamW) on the fit's first batch, median "
            f"of {setting.standalone_steps} steps after 3 untimed.", "",
            "| strategy | supernet step ms | standalone step ms | ratio | steps timed | fit s "
            "| winner MACs | held-out top-1 |", "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows]


def recipe_overrides(setting: Setting, strategy: str) -> list[str]:
    """``recipes/fashion_mnist_spos.yaml`` scaled down to ``setting``, with ``strategy``."""
    return [f"supernet.epochs={setting.nas_epochs}", f"search.strategy={strategy}",
            f"data.kwargs.batch_size={setting.nas_batch}",
            f"data.kwargs.train_fraction={setting.nas_fraction}",
            f"data.kwargs.heldout_fraction={setting.heldout_fraction}",
            f"search.population_size={setting.population}",
            f"search.generations={setting.generations}"]


# ---- the run -----------------------------------------------------------------------------
def environment(device: torch.device) -> list[str]:
    """Header lines: the device, the versions and what else was using the machine at start."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [f"- torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), Python "
             f"{platform.python_version()}, lightning {version('lightning')}, kornia "
             f"{version('kornia')}; CPU: {cpu_model()} ({os.cpu_count()} logical cores), load "
             f"average at start {load}"]
    if device.type == "cuda":
        try:
            processes = torch.cuda.list_gpu_processes(device).replace("\n", "; ")
        except Exception as error:  # NVML missing or not permitted
            processes = f"not readable ({type(error).__name__}: {error})"
        lines.append(f"- Device: {torch.cuda.get_device_name(device)}; processes on it at "
                     f"start (NVML): {processes}")
    else:
        lines.append("- Device: the CPU (smoke run: the figures say nothing about a GPU)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the markdown file to write")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, a few steps (smoke run)")
    parser.add_argument("--root", type=Path, default=Path(DEFAULT_ROOT),
                        help="the folder holding the four Fashion-MNIST idx files")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {list(SECTIONS)}")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if unknown := sorted(set(sections) - set(SECTIONS)):
        parser.error(f"unknown section(s) {unknown}; sections are {list(SECTIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device; on a CPU machine pass "
                     "--device cpu --tiny")
    if args.device == "cpu" and args.out.resolve() == DEFAULT_OUT:
        parser.error(f"{DEFAULT_OUT} holds a GPU run: write a CPU run elsewhere")
    device, mode = torch.device(args.device), "tiny" if args.tiny else "full"
    setting = SETTINGS[mode]
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(torch.jit.*is deprecated|does not have many "
                            "workers|GPU available but not used|LeafSpec).*")
    started, (busy0, own0) = time.perf_counter(), cpu_seconds()
    header, failures, body = environment(device), [], []
    recipe = Recipe.from_yaml(RECIPE, [*recipe_overrides(setting, "spos"),
                                       f"data.kwargs.root={str(args.root)!r}"])
    fashion = {"policy": FashionMNISTDataModule(
                   args.root, batch_size=AUGMENT_BATCH, train_fraction=setting.policy_fraction,
                   heldout_fraction=setting.heldout_fraction,
                   test_fraction=setting.test_fraction, seed=SEED),
               "nas": make_datamodule(recipe)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runners = {"augment": lambda: augment_throughput(device, setting),
                   "digits": lambda: digits_check(device, setting, work, failures),
                   "policy": lambda: policy_search(device, setting, fashion["policy"]),
                   "nas": lambda: nas_strategies(device, setting, recipe, fashion["nas"], work,
                                                 failures)}
        for name in sections:
            section_start = time.perf_counter()
            try:
                if name in fashion:
                    fashion[name].setup()
            except FileNotFoundError as error:
                lines = [f"Skipped: Fashion-MNIST is missing. {error}"]
            else:
                try:
                    lines = runners[name]()
                except Exception as error:  # the other sections still run
                    lines = [failed(f"section {name}", error, failures)]
            seconds = time.perf_counter() - section_start
            print(f"[{time.perf_counter() - started:6.0f} s] {SECTIONS[name]}: {seconds:.0f} s",
                  flush=True)
            body += [f"## {SECTIONS[name]} ({seconds:.0f} s)", "", *lines, ""]
    total = time.perf_counter() - started
    busy, own = cpu_seconds()
    others = max(0.0, (busy - busy0) - (own - own0))
    text = "\n".join([
        f"# GPU check on {args.device}" + (" (tiny smoke run)" if args.tiny else ""), "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; setting: {mode}; "
        f"elapsed **{total:.0f} s** (designed for at most 8 min on one H100/H200)",
        *header,
        f"- Other processes used {others:.0f} CPU-s during the run ({others / total:.2f} cores "
        "on average)",
        f"- Fashion-MNIST from {args.root}; reproduce with `python -m benchmarks.gpu_check OUT.md "
        f"--device {args.device}{' --tiny' if args.tiny else ''} --root DIR`",
        *([f"- **Failed checks: {'; '.join(failures)}**"] if failures else []), "",
        *body])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(text)
    if failures:
        raise SystemExit(f"failed checks: {'; '.join(failures)} (written to {args.out})")


if __name__ == "__main__":
    main()
