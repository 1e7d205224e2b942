"""The ground-truth table: every architecture of a small ``nasbench201`` space trained
standalone on Fashion-MNIST, written to results/nasbench201_table.csv, one row per
architecture and seed.

The space is NAS-Bench-201's skeleton at ``C=8, N=1`` on 1x28x28 inputs with a cell of
``--nodes 3`` (3 edges, 5 ops each: 125 architectures). Each is trained from its own
initialisation (seed = initialisation and data order) on the first ``--train-size`` training
images with one short schedule (SGD, Nesterov momentum 0.9, lr 0.1 cosine, weight decay 5e-4,
batch 256, ``--epochs``), then scored on a held-out split (training images 50,000-54,999) and
the test set. The run resumes: rows already in the CSV are skipped, each new row is appended
and flushed as soon as it is measured, and a torn last line (a run killed mid-write) is
dropped. This is the oracle for the ranking and searcher benchmarks of ``nasbench201``.

    .venv/bin/python -m benchmarks.bench_nasbench201_table [--seeds 0 1] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_costs import THREADS
from nas_aug.constraints import CostTable
from nas_aug.data.fashion_mnist import DEFAULT_ROOT, read_fashion_mnist
from nas_aug.search_spaces import create_space
from nas_aug.search_spaces.nasbench201 import arch_string
from nas_aug.space import Sample
from nas_aug.supernet import extract_subnet, space_of

COLUMNS = ("arch", "macs", "params", "seed", "heldout_top1", "test_top1", "train_seconds")
HELDOUT = slice(50_000, 55_000)
BATCH = 256


def space_kwargs(nodes: int) -> dict:
    return dict(C=8, N=1, in_chans=1, num_classes=10, img_size=28, nodes=nodes)


def all_samples(space) -> list[Sample]:
    """Every sample of ``space``, in label order (the table's row order)."""
    labels = space.labels
    return [dict(zip(labels, values))
            for values in itertools.product(*(space.candidates(label) for label in labels))]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows already in ``path`` (a torn last line is dropped)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    complete = [row for row in rows if all(row.get(column) not in (None, "") for column in COLUMNS)]
    if len(complete) < len(rows):  # rewrite without the torn line, so appends stay aligned
        write_rows(path, complete)
    return complete


def write_rows(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def to_tensors(images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(images, dtype=torch.float32).div_(255).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.as_tensor(labels, dtype=torch.long)


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    correct = sum((net(x[i:i + 1000]).argmax(-1) == y[i:i + 1000]).sum().item()
                  for i in range(0, len(x), 1000))
    return correct / len(x)


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int,
          seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    steps = epochs * math.ceil(len(x) / BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), BATCH):
            batch = order[i:i + BATCH]
            optimizer.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="train at most this many rows")
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "nasbench201_table.csv")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    arrays = read_fashion_mnist(args.root)
    x_train, y_train = to_tensors(arrays.images[:args.train_size],
                                  arrays.labels[:args.train_size])
    x_held, y_held = to_tensors(arrays.images[HELDOUT], arrays.labels[HELDOUT])
    x_test, y_test = to_tensors(arrays.test_images, arrays.test_labels)

    kwargs = space_kwargs(args.nodes)
    space = space_of(create_space("nasbench201", **kwargs))
    costs = CostTable.build(create_space("nasbench201", **kwargs), (1, 28, 28))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(args.out)
    done = {(row["arch"], int(row["seed"])) for row in rows}
    todo = [(sample, seed) for sample in all_samples(space) for seed in args.seeds
            if (arch_string(sample), seed) not in done]
    print(f"{len(done)} rows in {args.out}, {len(todo)} to train", flush=True)
    if not rows:
        write_rows(args.out, [])
    for n, (sample, seed) in enumerate(todo[:args.limit]):
        torch.manual_seed(seed)
        supernet = create_space("nasbench201", **kwargs)
        net = extract_subnet(supernet, sample, torch.zeros(1, 1, 28, 28))
        started = time.perf_counter()
        train(net, x_train, y_train, args.epochs, seed)
        seconds = time.perf_counter() - started
        cost = costs(sample)
        row = {"arch": arch_string(sample), "macs": cost.macs, "params": cost.params,
               "seed": seed, "heldout_top1": f"{accuracy(net, x_held, y_held):.4f}",
               "test_top1": f"{accuracy(net, x_test, y_test):.4f}",
               "train_seconds": f"{seconds:.1f}"}
        with args.out.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
            f.flush()
            os.fsync(f.fileno())
        print(f"[{n + 1}/{len(todo)}] {row}", flush=True)


if __name__ == "__main__":
    main()
