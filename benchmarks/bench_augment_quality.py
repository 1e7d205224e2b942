"""Does a searched policy help? A fixed network trained on a low-data split with no augmentation,
default RandAugment, TrivialAugment, and the policies DADA and the RandAugment search find on that
same split, with the same epochs and seeds; test top-1 as mean and spread over the seeds.

    python -m benchmarks.bench_augment_quality [--quick] [--seeds 3] [--epochs 80]

Every policy is applied the way a user applies an exported one: ``PolicyAugment`` on the
training batches, on the device (``ImageClassifier(policy=...)``). The searches run on the training
split with the held-out split as their outer objective; the test split is touched only for the
final figures. Written to ``benchmarks/results/augment_quality.md``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from benchmarks.bench_costs import write_atomic
from nas_aug.augment import Policy, RandAugment
from nas_aug.callbacks import AugmentSearch
from nas_aug.classifier import ImageClassifier
from nas_aug.data import DigitsDataModule

OUT = Path(__file__).parent / "results" / "augment_quality.md"
TRAIN_FRACTION, IMG_SIZE, BATCH = 0.1, 16, 32


def fixed_network() -> nn.Module:
    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 32, 1), *block(32, 64, 2), *block(64, 128, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def datamodule(seed: int) -> DigitsDataModule:
    return DigitsDataModule(batch_size=BATCH, train_fraction=TRAIN_FRACTION, img_size=IMG_SIZE,
                            seed=seed)


def trainer(epochs: int, callbacks=()) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, callbacks=list(callbacks), logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)


def train_and_test(policy: Policy | None, seed: int, epochs: int) -> tuple[float, float]:
    """Test top-1 of the fixed network trained with ``policy``, and the fit's seconds."""
    pl.seed_everything(seed, verbose=False)
    model = ImageClassifier(fixed_network(), policy=policy, augment_seed=seed)
    data, fit = datamodule(seed), trainer(epochs)
    started = time.perf_counter()
    fit.fit(model, datamodule=data)
    seconds = time.perf_counter() - started
    return fit.test(model, datamodule=data, verbose=False)[0]["test_acc"], seconds


def search(method: str, seed: int, epochs: int, **options) -> tuple[Policy, float]:
    """The policy ``method`` finds on the split, and the search fit's seconds."""
    pl.seed_everything(seed, verbose=False)
    callback = AugmentSearch(method=method, seed=seed, **options)
    started = time.perf_counter()
    trainer(epochs, [callback]).fit(ImageClassifier(fixed_network()),
                                    datamodule=datamodule(seed))
    return Policy.from_json(callback.result["policy"]), time.perf_counter() - started


def describe(policy: Policy) -> str:
    if policy.name == "randaugment":
        return f"RandAugment(N={policy.draws_per_sample}, M={policy.sub_policies[0][0].magnitude})"
    top = policy.sub_policies[:3]
    return "; ".join(" + ".join(f"{op.name}(p={op.probability:.2f}, m={op.magnitude:.2f})"
                                for op in ops) for ops in top) + " ..."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 seed: a smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    seeds, epochs = (1, 2) if args.quick else (args.seeds, args.epochs)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    rows: dict[str, list[tuple[float, float]]] = {}
    searched: dict[str, list[str]] = {"dada": [], "randaugment": []}
    search_seconds: dict[str, list[float]] = {"dada": [], "randaugment": []}
    for seed in range(seeds):
        fixed = {"(a) no augmentation": None, "(b) RandAugment(N=2, M=0.3)": RandAugment(2, 0.3),
                 "(c) TrivialAugment": Policy.preset("trivialaugment")}
        for method, label in (("dada", "(d) DADA, searched"),
                              ("randaugment", "(e) RandAugment (N, M), searched")):
            policy, seconds = search(method, seed, epochs)
            searched[method].append(describe(policy))
            search_seconds[method].append(seconds)
            fixed[label] = policy
        for label, policy in fixed.items():
            rows.setdefault(label, []).append(train_and_test(policy, seed, epochs))
            print(f"seed {seed} {label}: test top-1 {rows[label][-1][0]:.4f} "
                  f"({rows[label][-1][1]:.1f} s)", flush=True)

    plain = statistics.mean(s for _, s in rows["(a) no augmentation"])
    sizes = datamodule(0)
    sizes.setup()
    lines = [
        "# Augmentation policies on a low-data split",
        "",
        f"scikit-learn digits at {IMG_SIZE}x{IMG_SIZE}, {TRAIN_FRACTION:.0%} of the training "
        f"split ({sizes.sizes['train']} images; held-out {sizes.sizes['heldout']}, test "
        f"{sizes.sizes['test']}), a fixed 3-conv "
        f"network, AdamW + cosine, {epochs} epochs, batch {BATCH}, seeds 0..{seeds - 1} "
        f"(data split, weights and augmentation all follow the seed), {args.threads} CPU "
        f"thread{'s' if args.threads > 1 else ''}. The searches use the same training split, "
        "score on the held-out split, and never see the test split. Reproduce with "
        "`python -m benchmarks.bench_augment_quality`.",
        "",
        "| policy | test top-1, mean | spread (min - max) | per seed | fit seconds |",
        "|---|---:|---:|---|---:|",
    ]
    for label, results in rows.items():
        accs = [a for a, _ in results]
        lines.append(f"| {label} | {statistics.mean(accs):.4f} | {min(accs):.4f} - "
                     f"{max(accs):.4f} | {', '.join(f'{a:.4f}' for a in accs)} | "
                     f"{statistics.mean(s for _, s in results):.1f} |")
    lines += ["", "Search cost (one search fit over the same epochs, relative to one plain "
              "training (a)):", ""]
    for method, seconds in search_seconds.items():
        lines.append(f"- {method}: {statistics.mean(seconds):.1f} s, "
                     f"{statistics.mean(seconds) / plain:.2f}x a plain training")
    lines += ["", "Policies found (per seed):", ""]
    for method, found in searched.items():
        lines += [f"- {method} seed {seed}: {text}" for seed, text in enumerate(found)]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
