"""``nas-aug run`` of a tiny digits recipe that can be killed (SIGKILL) at its N-th training
step or N-th held-out score, counted over the whole run; extra arguments go to ``nas-aug run``
(``--resume`` continues the killed run). Prints ``scored N`` at each held-out score.

    python tests/killed_recipe.py OUT [train:N | score:N | -] [nas-aug run arguments...]

Run as a script by tests/test_recipe_resume.py (not collected by pytest).
"""

import sys
from pathlib import Path

import torch
from helpers import count_calls  # tests/, this script's folder

from nas_aug import cli
from nas_aug.callbacks import one_shot_nas
from nas_aug.classifier import ImageClassifier

RECIPE = Path(__file__).parents[1] / "recipes" / "digits_spos.yaml"
TINY = ["data.kwargs={batch_size: 64, train_fraction: 0.5}", "supernet.epochs=2",
        "retrain.epochs=2", "search.population_size=4", "search.generations=3",
        "search.calibration_batches=2", "search.budget.macs=5e5",
        "space.kwargs={num_classes: 10, in_chans: 1, img_size: 8, expand_ratios: [3, 6], "
        "kernel_sizes: [3]}"]


def main(out: str, kill: str, *args: str) -> int:
    torch.set_num_threads(1)
    what, count = kill.split(":") if kill != "-" else (None, None)
    count_calls(ImageClassifier, "training_step", int(count) if what == "train" else None)
    count_calls(one_shot_nas, "top1_accuracy", int(count) if what == "score" else None,
                say="scored")
    overrides = [arg for item in TINY for arg in ("--set", item)]
    return cli.main(["run", str(RECIPE), "--out", out, "--quiet", *overrides, *args])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
