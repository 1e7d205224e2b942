"""Augmentation throughput on CPU, one policy four ways, written to results/augment_throughput.md.

For each policy (RandAugment(2, 0.5), AutoAugment CIFAR-10, TrivialAugment) and image shape
(Fashion-MNIST 1x28x28, or scikit-learn's digits upscaled where it is not installed; 3x32x32
crops of scikit-learn's sample photos), images per second of:

1. ours: ``PolicyAugment`` on batches of 256 (uint8 -> float / 255 -> augment), per-sample ops;
2. ``to_kornia(policy)``: the same policy as a kornia module, which draws sub-policies per batch;
3. kornia's own ``kornia.augmentation.auto`` RandAugment / AutoAugment / TrivialAugment, per batch;
4. ``to_albumentations(policy)`` per uint8 HWC image in a ``DataLoader`` (batch 256), with 0 and
   2 worker processes.

Every path works through the same images; the paths take turns (one pass each per round, the
first round untimed) and the median pass gives images/s; the ratio is over ours, same run.

    .venv/bin/python -m benchmarks.bench_augment [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import cv2
import kornia.augmentation.auto as kornia_auto
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits, load_sample_images
from torch.utils.data import DataLoader, Dataset

from benchmarks.bench_costs import THREADS, cpu_model, cpu_seconds, interleaved_times, write_atomic
from nas_aug.augment import Policy, PolicyAugment, RandAugment, to_albumentations, to_kornia
from nas_aug.data.fashion_mnist import DEFAULT_ROOT, read_fashion_mnist

BATCH = 256
SEED = 0
WORKERS = (0, 2)
# (policy, kornia's own counterpart; RandAugment's magnitude 0.5 is kornia's m = 0.5 * 30)
POLICIES: dict[str, tuple[Policy, Callable[[], torch.nn.Module]]] = {
    "RandAugment(2, 0.5)": (RandAugment(2, 0.5), lambda: kornia_auto.RandAugment(n=2, m=15)),
    "AutoAugment CIFAR-10": (Policy.preset("autoaugment_cifar10"),
                             lambda: kornia_auto.AutoAugment("cifar10")),
    "TrivialAugment": (Policy.preset("trivialaugment"), kornia_auto.TrivialAugment),
}


def grey_images(count: int) -> tuple[np.ndarray, str]:
    """``count`` uint8 ``(N, 28, 28, 1)`` images, and where they come from."""
    if Path(DEFAULT_ROOT).is_dir():
        return read_fashion_mnist().images[:count, :, :, None], f"Fashion-MNIST ({DEFAULT_ROOT})"
    digits = load_digits().images
    digits = torch.tensor(digits[np.arange(count) % len(digits)], dtype=torch.float32)[:, None] / 16
    upscaled = F.interpolate(digits, size=(28, 28), mode="bilinear").clamp(0, 1)
    return ((upscaled * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
            "scikit-learn digits, bilinear to 28x28 (Fashion-MNIST is not installed)")


def photo_crops(count: int) -> tuple[np.ndarray, str]:
    """``count`` uint8 ``(N, 32, 32, 3)`` random crops of scikit-learn's two photos, shrunk 4x,
    and where they come from."""
    photos = torch.from_numpy(np.stack(load_sample_images().images)).permute(0, 3, 1, 2)
    small = F.interpolate(photos.float(), scale_factor=0.25, mode="bilinear", antialias=True)
    small = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(SEED)
    _, height, width, _ = small.shape
    corners = zip(rng.integers(len(small), size=count), rng.integers(0, height - 32, count),
                  rng.integers(0, width - 32, count))
    crops = np.stack([small[i, y:y + 32, x:x + 32] for i, y, x in corners])
    return crops, (f"random 32x32 crops of scikit-learn's two sample photos shrunk to "
                   f"{height}x{width}")


class AlbumentationsImages(Dataset):
    """uint8 HWC images through an Albumentations transform, as uint8 CHW tensors."""

    def __init__(self, images: np.ndarray, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.transform(image=self.images[index])["image"]
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def on_batches(augment: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor
               ) -> Callable[[], None]:
    """One pass of ``augment`` over ``images`` (uint8 NCHW) in batches, converted to float."""
    def run() -> None:
        for batch in images.split(BATCH):
            augment(batch.float() / 255)

    return run


def through_loader(loader: DataLoader) -> Callable[[], None]:
    """One pass over ``loader``."""
    def run() -> None:
        for _ in loader:
            pass

    return run


def refusal(module: torch.nn.Module, images: torch.Tensor) -> str | None:
    """Why a kornia policy module cannot run on such images: the first error one of its
    sub-policies raises (kornia's HSV ``Saturate`` needs 3 channels), or ``None``."""
    for sub_policy in module.children():
        try:
            sub_policy(images)
        except ValueError as error:
            ops = " + ".join(type(op).__name__ for op in sub_policy.children())
            return f"{ops}: {str(error).split('. ')[0]}"
    return None


def bench(name: str, policy: Policy, kornia_own: torch.nn.Module, images: np.ndarray,
          repeats: int, threads: int) -> list[str]:
    """Table rows for one policy on one set of images."""
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(SEED)
    on_device = f"torch {threads} threads"
    paths = {("ours: PolicyAugment, per sample", on_device):
             on_batches(PolicyAugment(policy, seed=SEED), tensors)}
    refused = {}
    for path, module in [("to_kornia(policy), sub-policy per batch", to_kornia(policy)),
                         (f"kornia's own auto.{type(kornia_own).__name__}, per batch",
                          kornia_own)]:
        reason = refusal(module, tensors[:64].float() / 255)
        if reason is None:
            paths[path, on_device] = on_batches(module, tensors)
        else:
            refused[path, on_device] = reason
    transform, left_out = to_albumentations(policy)
    left_out = f" (leaves out {', '.join(left_out)})" if left_out else ""
    for workers in WORKERS:
        loader = DataLoader(AlbumentationsImages(images, transform), batch_size=BATCH,
                            num_workers=workers, persistent_workers=workers > 0)
        where = "main process" if workers == 0 else f"{workers} worker processes"
        paths[f"to_albumentations(policy), per image in a DataLoader{left_out}", where] = \
            through_loader(loader)
    times = interleaved_times(paths, repeats, warmup=1)
    rate = {key: len(images) / statistics.median(seconds) for key, seconds in times.items()}
    ours = next(iter(rate.values()))
    shape = "x".join(str(side) for side in tensors.shape[1:])
    rows = [f"| {name} | {shape} | {path} | {cpu} | {value:,.0f} | {value / ours:.2f}× |"
            for (path, cpu), value in rate.items()]
    return rows + [f"| {name} | {shape} | {path} | {cpu} | n/a: {reason} | - |"
                   for (path, cpu), reason in refused.items()]


def worker_seconds() -> float:
    """CPU-seconds of this process's finished children (the DataLoader workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results"
                        / "augment_throughput.md")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch threads in the main process")
    args = parser.parse_args()
    count, repeats = (512, 2) if args.quick else (2048, 15)
    torch.set_num_threads(args.threads)
    start, (busy0, own0), workers0 = time.perf_counter(), cpu_seconds(), worker_seconds()
    data = [grey_images(count), photo_crops(count)]
    rows = []
    for name, (policy, kornia_own) in POLICIES.items():
        for images, _ in data:
            rows += bench(name, policy, kornia_own(), images, repeats, args.threads)
            print(f"done: {name}, {images.shape}", flush=True)
    total = time.perf_counter() - start
    busy, own = cpu_seconds()
    others = max(0.0, (busy - busy0) - (own - own0) - (worker_seconds() - workers0))
    mode = "quick (smoke run: few repeats, numbers are rough)" if args.quick else "full"
    text = "\n".join([
        "# Augmentation throughput on CPU: per-sample batched vs Kornia vs Albumentations",
        "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; mode: {mode}; "
        f"total runtime {total:.0f} s",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores), "
        f"**torch.set_num_threads({args.threads})** in the main process (DataLoader workers run "
        f"torch single-threaded), OpenCV threads {cv2.getNumThreads()}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, kornia {version('kornia')}, "
        f"albumentations {version('albumentations')}",
        f"- Other processes used {others:.1f} CPU-s during the run ({others / total:.2f} cores "
        "on average): they skew timings; the paths take turns so a load change hits them alike",
        f"- Data: {count} images of each kind: 1x28x28 = {data[0][1]}; 3x32x32 = {data[1][1]}. "
        f"Batches of {BATCH}; images/s = {count} ÷ the median of {repeats} timed passes "
        "(after one untimed pass); ratio = images/s ÷ ours (same policy and images)",
        "- Ours and the kornia modules start from a uint8 NCHW batch (converted to float / 255); "
        "Albumentations from uint8 HWC images, collated to a uint8 NCHW batch by the DataLoader",
        "- Not the same work: kornia's modules draw one sub-policy per batch (ours per sample); "
        "kornia's own policies are kornia's op tables, not ours; the Albumentations export "
        "leaves out ops with no faithful counterpart (listed in its rows)",
        "",
        "| policy | image shape | path | CPU | images/s | ratio vs ours |",
        "|---|---|---|---|---:|---:|",
        *rows,
        "",
    ])
    write_atomic(args.out, text)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
