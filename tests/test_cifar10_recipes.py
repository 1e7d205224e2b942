"""The CIFAR-10 recipes: their settings hold together, and each runs end to end with its own
keys and values, shrunk to seconds (8x8 inputs, one epoch) on a fake CIFAR-10 binary release."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import write_cifar_root

from nas_aug.cli import main
from nas_aug.constraints.counters import FvcoreCounter
from nas_aug.recipe import Recipe, make_datamodule
from nas_aug.search_spaces import create_space
from nas_aug.supernet import activate, space_of

RECIPES = Path(__file__).parents[1] / "recipes"
ONE_GPU = ["cifar10_spos", "cifar10_darts"]
SIZE = 8  # the tests' image side; the recipes' is 32


def overrides(items):
    return [arg for item in items for arg in ("--set", item)]


@functools.cache
def smallest_and_largest_macs(name: str, kwargs: str, input_shape: tuple) -> tuple[int, int]:
    """fvcore's MACs of the space's smallest and largest sub-networks (``kwargs`` as JSON)."""
    net = create_space(name, **json.loads(kwargs))
    space = space_of(net)
    macs = []
    for sample in (space.smallest(), space.largest()):
        activate(net, sample, space)
        macs.append(FvcoreCounter()(net, torch.zeros(1, *input_shape)))
    return tuple(macs)


@pytest.mark.parametrize("name", [*ONE_GPU, "cifar10_ddp"])
def test_recipe_settings_hold_together(name):
    path = RECIPES / f"{name}.yaml"
    recipe = Recipe.from_yaml(path)
    assert recipe.name == name and recipe.data.name == "cifar10"
    space = recipe.space.kwargs
    shape = (space["in_chans"], space["img_size"], space["img_size"])
    assert make_datamodule(recipe).input_shape == shape == (3, 32, 32)  # no data read yet
    smallest, largest = smallest_and_largest_macs(recipe.space.name, json.dumps(space), shape)
    assert smallest < recipe.search.budget.macs < largest
    text = path.read_text()  # the range the recipe's comment states is the counted one
    assert f"spans {smallest:,} (smallest) to {largest:,} (largest) MACs" in text
    assert "ESTIMATES, NOT MEASURED" in text

    trainer = recipe.trainer
    assert trainer.accelerator == "gpu" and trainer.precision == "bf16-mixed"
    if name in ONE_GPU:
        assert trainer.devices == 1 and trainer.strategy == "auto"
    else:  # one path per step leaves parameters unused: SPOS under DDP must look for them
        assert recipe.search.strategy == "spos" and recipe.supernet.sampling == "uniform"
        assert trainer.devices > 1 and trainer.strategy == "ddp_find_unused_parameters_true"


def tiny(recipe_path: Path, root: Path) -> tuple[list[str], int]:
    """Overrides that shrink a CIFAR-10 recipe to seconds on the CPU (its precision, bf16-mixed,
    is kept: the CPU has it too), and the budget they set: the recipe's own, scaled from 32x32
    to 8x8 images."""
    recipe = Recipe.from_yaml(recipe_path)
    budget = int(recipe.search.budget.macs * (SIZE / recipe.space.kwargs["img_size"]) ** 2)
    space = {**recipe.space.kwargs, "img_size": SIZE}
    smallest, largest = smallest_and_largest_macs(recipe.space.name, json.dumps(space),
                                                  (space["in_chans"], SIZE, SIZE))
    assert smallest < budget < largest  # the budget still rules sub-networks out
    items = [f"data.kwargs.root={root}", f"data.kwargs.img_size={SIZE}",
             "data.kwargs.batch_size=32", f"space.kwargs.img_size={SIZE}",
             "supernet.epochs=1", "retrain.epochs=1", "search.population_size=4",
             "search.generations=2", "search.calibration_batches=2",
             f"search.budget.macs={budget}", "trainer.accelerator=cpu"]
    return overrides(items), budget


@pytest.mark.parametrize("name", ONE_GPU)
def test_one_gpu_recipe_runs_end_to_end_on_the_cpu(name, tmp_path, capsys):
    root, out = tmp_path / "cifar", tmp_path / "run"
    write_cifar_root(root)
    path = RECIPES / f"{name}.yaml"
    items, budget = tiny(path, root)
    assert main(["run", str(path), "--out", str(out), *items]) == 0, capsys.readouterr().err
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["macs"] <= budget and arch["budget"]["macs"] == budget
    assert arch["strategy"] == Recipe.from_yaml(path).search.strategy
    assert (out / "subnet.safetensors").exists() and (out / "report.md").exists()
    results = (out / "results.md").read_text()
    for row in ("searched, inherited weights", "searched, retrained from scratch",
                "largest within budget, retrained from scratch",
                "largest, retrained from scratch", "smallest, retrained from scratch"):
        assert f"| {row} |" in results
    assert "precision: bf16-mixed" in results and "data:\n  name: cifar10\n" in results


def test_ddp_recipe_runs_on_two_processes(tmp_path):
    """The DDP recipe's own settings (SPOS, ddp_find_unused_parameters_true, bf16-mixed) on two
    CPU processes over gloo: the run finishes, and rank 0 alone prints the results."""
    root, out = tmp_path / "cifar", tmp_path / "run"
    write_cifar_root(root)
    path = RECIPES / "cifar10_ddp.yaml"
    items, budget = tiny(path, root)
    exe = Path(sys.executable).with_name("nas-aug")
    done = subprocess.run([str(exe), "run", str(path), "--out", str(out), *items,
                           "--set", "trainer.devices=2"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = (out / "results.md").read_text()
    assert "strategy: ddp_find_unused_parameters_true" in results and "devices: 2" in results
    assert "precision: bf16-mixed" in results
    assert "| searched, retrained from scratch |" in results
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["strategy"] == "spos" and arch["macs"] <= budget == arch["budget"]["macs"]
    assert done.stdout.count("| searched, inherited weights |") == 1  # printed by rank 0 only
