"""Does a searched policy earn its cost? A fixed network trained on three tasks with no
augmentation, crop + flip, TrivialAugment, RandAugment(2, 0.3), and the policies that the
RandAugment race and DADA find inside one fit; test top-1 as mean and spread over seeds, and
each row's cost relative to one plain training.

    python -m benchmarks.bench_augment_quality [--quick] [--tasks digits,fashion,orientation]
        [--rows none DADA "RandAugment race"] [--out FILE]

Tasks: ``digits`` (scikit-learn's digits at 16x16, 10% of the training split), ``fashion``
(Fashion-MNIST at 28x28, a share of the training set) and ``orientation`` (the same images,
each turned by 0, 90, 180 or 270 degrees, the turn as the label: the self-supervised
pretext task, where rotations and flips change the label). Fashion-MNIST comes from Debian's
``dataset-fashion-mnist``; without it those tasks are left out and said so.

Every fixed policy is applied the way a user applies an exported one: ``PolicyAugment`` on the
training batches (``ImageClassifier(policy=...)``). A search runs inside an ordinary fit of the
same network for the same epochs, on the training split with the held-out split as its outer
objective; its row reports that fit's own model ("in the fit": what the user gets for the cost
of the search alone) and the network retrained with the policy it found. The test split is
touched only for the final figures. Written to ``benchmarks/results/augment_quality.md``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from benchmarks.bench_costs import write_atomic
from nas_aug.augment import Policy, RandAugment
from nas_aug.callbacks import AugmentSearch
from nas_aug.classifier import ImageClassifier
from nas_aug.data import DigitsDataModule, FashionMNISTDataModule
from nas_aug.data._arrays import Arrays
from nas_aug.data.fashion_mnist import DEFAULT_ROOT

OUT = Path(__file__).parent / "results" / "augment_quality.md"
BATCH = 32
FIXED = {"none": lambda: None, "crop + flip": lambda: Policy.preset("crop_flip"),
         "TrivialAugment": lambda: Policy.preset("trivialaugment"),
         "RandAugment(2, 0.3)": lambda: RandAugment(2, 0.3)}
SEARCHES = {"RandAugment race": "randaugment", "DADA": "dada"}


class OrientationDataModule(FashionMNISTDataModule):
    """Fashion-MNIST images turned by 0, 90, 180 or 270 degrees (seeded per image); the
    label is the turn."""

    num_classes = 4
    classes = ("0", "90", "180", "270")

    def load_arrays(self) -> Arrays:
        arrays = super().load_arrays()
        rng = np.random.default_rng(1234)

        def turned(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            turns = rng.integers(0, 4, len(images))
            out = np.stack([np.rot90(image, k) for image, k in zip(images, turns)])
            return np.ascontiguousarray(out), turns

        (train, labels), (test, test_labels) = turned(arrays.images), turned(arrays.test_images)
        return Arrays(train, labels, test, test_labels)


@dataclass(frozen=True)
class Task:
    name: str
    about: str
    datamodule: Callable[[int], pl.LightningDataModule]
    classes: int
    epochs: int
    needs_fashion_mnist: bool = False


def _fashion(cls: type[FashionMNISTDataModule]) -> Callable[[int], pl.LightningDataModule]:
    return lambda seed: cls(batch_size=BATCH, train_fraction=0.05, heldout_fraction=0.05,
                            test_fraction=0.2, seed=seed)


TASKS = {
    "digits": Task("digits", "scikit-learn digits at 16x16, 10% of the training split",
                   lambda seed: DigitsDataModule(batch_size=BATCH, train_fraction=0.1,
                                                 img_size=16, seed=seed), 10, 80),
    "fashion": Task("fashion", "Fashion-MNIST at 28x28, 5% of the training set",
                    _fashion(FashionMNISTDataModule), 10, 15, True),
    "orientation": Task("orientation", "Fashion-MNIST turned by 0/90/180/270 degrees, the "
                        "turn as the label, 5% of the training set",
                        _fashion(OrientationDataModule), 4, 15, True),
}


def fixed_network(classes: int) -> nn.Module:
    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 32, 1), *block(32, 64, 2), *block(64, 128, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes))


def trainer(epochs: int, callbacks=()) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, callbacks=list(callbacks), logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)


def fit_and_test(task: Task, seed: int, epochs: int, policy: Policy | None = None,
                 search: str | None = None, **options
                 ) -> tuple[float, float, AugmentSearch | None]:
    """Test top-1 of the fixed network trained on ``task`` with ``policy`` or inside the
    ``search`` method's fit (with its ``options``), the fit's seconds, and the search's
    callback (its policy in ``found(callback)``)."""
    pl.seed_everything(seed, verbose=False)
    callback = None if search is None else AugmentSearch(method=search, seed=seed, **options)
    model = ImageClassifier(fixed_network(task.classes), policy=policy, augment_seed=seed)
    data, fit = task.datamodule(seed), trainer(epochs, [callback] if callback else [])
    started = time.perf_counter()
    fit.fit(model, datamodule=data)
    seconds = time.perf_counter() - started
    accuracy = fit.test(model, datamodule=data, verbose=False)[0]["test_acc"]
    return accuracy, seconds, callback


def found(callback: AugmentSearch) -> Policy:
    """The policy a search's fit exported."""
    return Policy.from_json(callback.result["policy"])


def describe(policy: Policy) -> str:
    if policy.name.startswith("randaugment"):
        magnitude = policy.sub_policies[0][0].magnitude
        return f"{policy.name}(N={policy.draws_per_sample}, M={magnitude})"
    if len(policy.sub_policies) == 1 or policy.name in ("trivialaugment", "crop_flip"):
        return policy.name
    if all(len(ops) == 1 for ops in policy.sub_policies):  # DADA's distribution export
        shares = collections.Counter(ops[0].name for ops in policy.sub_policies)
        top = ", ".join(f"{name} {count / len(policy.sub_policies):.0%}"
                        for name, count in shares.most_common(3))
        return (f"{len(shares)} ops in proportion, {policy.draws_per_sample} drawn per sample "
                f"({top} ...)")
    top = policy.sub_policies[:3]
    return "; ".join(" + ".join(f"{op.name}(p={op.probability:.2f}, m={op.magnitude:.2f})"
                                for op in ops) for ops in top) + " ..."


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} | {min(values):.4f} - {max(values):.4f} | " + \
        ", ".join(f"{v:.4f}" for v in values)


ROWS = (*FIXED, *SEARCHES)


def run_task(task: Task, seeds: int, epochs: int, names: tuple[str, ...] = ROWS) -> list[str]:
    """The task's section: ``names`` (of :data:`ROWS`; ``none`` always, the cost's base)."""
    fixed = {label: FIXED[label] for label in FIXED if label in names or label == "none"}
    searches = {label: SEARCHES[label] for label in SEARCHES if label in names}
    rows: dict[str, list[tuple[float, float]]] = {}
    picks: dict[str, list[str]] = {name: [] for name in searches}
    for seed in range(seeds):
        for label, policy in fixed.items():
            accuracy, seconds, _ = fit_and_test(task, seed, epochs, policy())
            rows.setdefault(label, []).append((accuracy, seconds))
            print(f"{task.name} seed {seed} {label}: {accuracy:.4f} ({seconds:.1f} s)", flush=True)
        for label, method in searches.items():
            accuracy, seconds, callback = fit_and_test(task, seed, epochs, search=method)
            policy = found(callback)
            rows.setdefault(f"{label}, in the fit", []).append((accuracy, seconds))
            picks[label].append(describe(policy))
            retrained, again, _ = fit_and_test(task, seed, epochs, policy)
            rows.setdefault(f"{label}, retrained", []).append((retrained, seconds + again))
            print(f"{task.name} seed {seed} {label}: {accuracy:.4f} in the fit, {retrained:.4f} "
                  f"retrained ({describe(policy)})", flush=True)
    plain = statistics.mean(s for _, s in rows["none"])
    sizes = task.datamodule(0)
    sizes.setup()
    best_fixed = max(fixed, key=lambda label: statistics.mean(a for a, _ in rows[label]))
    lines = [f"## {task.name}: {task.about}", "",
             f"{sizes.sizes['train']} training images, {sizes.sizes['heldout']} held out, "
             f"{sizes.sizes['test']} test; {epochs} epochs, seeds 0..{seeds - 1}. Cost: the "
             "row's fit seconds (a search row retrained: search + retraining) over the mean "
             "seconds of one plain training.", "",
             "| policy | test top-1, mean | spread (min - max) | per seed | cost |",
             "|---|---:|---:|---|---:|"]
    for label, results in rows.items():
        cost = statistics.mean(s for _, s in results) / plain
        lines.append(f"| {label} | {_spread([a for a, _ in results])} | {cost:.2f}x |")
    best = [a for a, _ in rows[best_fixed]]
    lines += ["", f"Best fixed row{'' if len(fixed) == len(FIXED) else ' of those run'}: "
              f"{best_fixed} ({statistics.mean(best):.4f}, spread "
              f"{min(best):.4f} - {max(best):.4f}).", "", "Policies found (per seed):", ""]
    for label, policies in picks.items():
        lines += [f"- {label}: " + "; ".join(f"seed {i}: {text}" for i, text in
                                              enumerate(policies))]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 seed: a smoke run")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, of {list(TASKS)}")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                        help=f"of {list(ROWS)}, each quoted (none always runs: the cost's "
                             "base)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every fit (default: each task's own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; tasks are {list(TASKS)}")
    rows = tuple(args.rows)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    started = time.perf_counter()
    sections, left_out = [], []
    for name in names:
        task = TASKS[name]
        if task.needs_fashion_mnist and not Path(DEFAULT_ROOT).is_dir():
            left_out.append(f"{name} (Fashion-MNIST is not in {DEFAULT_ROOT}: make data)")
            continue
        epochs = 2 if args.quick else (args.epochs or task.epochs)
        sections += run_task(task, 1 if args.quick else args.seeds, epochs, rows)
    lines = ["# Augmentation policies: fixed defaults against searched ones", "",
             f"A fixed 3-conv network, AdamW + cosine, batch {BATCH}, {args.threads} CPU "
             f"thread{'s' if args.threads > 1 else ''}; data split, weights and augmentation "
             "all follow the seed. The searches train on the training split and score on the "
             "held-out split; the test split is used for these figures only. Targets (issue "
             "#14): the best searched row within the seed spread of the best fixed row on "
             "every task, above TrivialAugment and RandAugment on orientation, at most 1.5x "
             "one training. Reproduce with `python -m benchmarks.bench_augment_quality"
             f"{''.join(' ' + arg for arg in sys.argv[1:])}`; "
             f"this run took {(time.perf_counter() - started) / 60:.0f} min."
             + ("" if not args.quick else " **Quick smoke run: the figures mean nothing.**"),
             ""]
    if left_out:
        lines += [f"Left out: {', '.join(left_out)}.", ""]
    text = "\n".join(lines + sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
