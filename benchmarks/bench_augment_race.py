"""Does the RandAugment race fall back to the right fixed default? Two toys built so that a
fixed default is right, several seeds each; the race's winner per seed, and each candidate's
held-out top-1 when it alone trains the network ("right": within 0.01 of the best of those).
Written to ``benchmarks/results/augment_race.md``.

* ``brightness``: four classes told apart by mean brightness, so colour ops and zero-filled
  warps change the label (a small conv net); ``none`` is meant to be right. The fallback test
  in ``tests/callbacks/test_augment_search.py`` races on this toy.
* ``shift_flip``: four glyphs centred in the training images, shifted and mirrored in the
  held-out images (a small MLP, which has no invariance of its own); ``crop_flip`` is meant
  to be right.

    python -m benchmarks.bench_augment_race [--seeds 5] [--score cosine]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.bench_costs import write_atomic
from nas_aug.augment import Policy, PolicyAugment
from nas_aug.augment.search import SCORES, RandAugmentSearch
from nas_aug.callbacks import AugmentSearch

OUT = Path(__file__).parent / "results" / "augment_race.md"
EPOCHS, BATCH = 6, 32


def brightness(n: int, seed: int, heldout: bool) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed + 100 * heldout)
    labels = torch.randint(0, 4, (n,), generator=generator)
    level = (0.2 + 0.2 * labels.float())[:, None, None, None]
    images = level * (0.75 + 0.5 * torch.rand(n, 1, 12, 12, generator=generator))
    return TensorDataset(images.clamp(0, 1), labels)


GLYPHS = (torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(5)) > 0.5).float()


def shift_flip(n: int, seed: int, heldout: bool) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed + 100 * heldout)
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = torch.zeros(n, 1, 16, 16)
    images[:, :, 5:11, 5:11] = GLYPHS[labels]
    images = (images * 0.8 + 0.1 * torch.rand(n, 1, 16, 16, generator=generator)).clamp(0, 1)
    if heldout:
        images = PolicyAugment(Policy.preset("crop_flip"), seed=seed)(images)
    return TensorDataset(images, labels)


class Classifier(pl.LightningModule):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


TOYS = {
    "brightness": (brightness, lambda: nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4))),
    "shift_flip": (shift_flip, lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 4))),
}


def trainer(callbacks=()) -> pl.Trainer:
    return pl.Trainer(max_epochs=EPOCHS, callbacks=list(callbacks), logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)


def race(toy: str, seed: int, score: str) -> str:
    data, network = TOYS[toy]
    torch.manual_seed(seed)
    method = RandAugmentSearch(num_ops=(2,), magnitudes=(0.3, 0.9), score=score, seed=seed)
    trainer([AugmentSearch(method=method)]).fit(
        Classifier(network()), DataLoader(data(256, seed, False), batch_size=BATCH, shuffle=True),
        DataLoader(data(128, seed, True), batch_size=64))
    return str(method.candidates[method.survivors[0]])


def alone(toy: str, seed: int, policy: Policy) -> float:
    """Held-out top-1 of the toy's network trained with ``policy`` alone."""
    data, network = TOYS[toy]
    torch.manual_seed(seed)
    net, augment = network(), PolicyAugment(policy, seed=seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(EPOCHS * 5):
        for x, y in DataLoader(data(256, seed, False), batch_size=BATCH, shuffle=True):
            loss = F.cross_entropy(net(augment(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    x, y = data(128, seed, True).tensors
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--score", choices=SCORES, default="cosine")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    candidates = RandAugmentSearch(num_ops=(2,), magnitudes=(0.3, 0.9))
    lines = ["# Does the RandAugment race fall back to the right default?", "",
             f"Two toys where one fixed default is right by construction (see the script); "
             f"candidates {candidates.candidates}, {EPOCHS} epochs of 256 images, score "
             f"`{args.score}`, seeds 0..{args.seeds - 1}. 'Alone' is each candidate's held-out "
             f"top-1 when it alone trains the toy's network ({EPOCHS * 5} epochs, seed 0). "
             "Reproduce with `python -m benchmarks.bench_augment_race`.", "",
             "| toy | alone: held-out top-1 | right | race winners (per seed) | winners right |",
             "|---|---|---|---|---:|"]
    for toy in TOYS:
        trained = {str(c): alone(toy, 0, p) for c, p in zip(candidates.candidates,
                                                            candidates.policies)}
        right = [c for c, a in trained.items() if a >= max(trained.values()) - 0.01]
        winners = [race(toy, seed, args.score) for seed in range(args.seeds)]
        hits = sum(count for winner, count in Counter(winners).items() if winner in right)
        print(toy, trained, winners, flush=True)
        lines.append(f"| {toy} | {', '.join(f'{c} {a:.2f}' for c, a in trained.items())} | "
                     f"{', '.join(right)} | {', '.join(winners)} | {hits}/{args.seeds} |")
    text = "\n".join(lines) + "\n"
    write_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
