"""The ``nas-aug`` command line: spaces listing and a whole recipe, shrunk to seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas_aug.cli import main
from nas_aug.recipe import Recipe

RECIPE = Path(__file__).parents[1] / "recipes" / "digits_spos.yaml"
TINY = ["supernet.epochs=1", "retrain.epochs=1", "search.population_size=4",
        "search.generations=2", "search.calibration_batches=2",
        "space.kwargs={num_classes: 10, in_chans: 1, img_size: 8, expand_ratios: [3, 6], "
        "kernel_sizes: [3]}"]


def overrides(items):
    return [arg for item in items for arg in ("--set", item)]


def test_console_script_lists_spaces():
    exe = Path(sys.executable).with_name("nas-aug")  # installed beside the interpreter
    assert exe.exists(), "the nas-aug entry point is not installed"
    out = subprocess.run([str(exe), "spaces"], capture_output=True, text=True, check=True).stdout
    assert "mobilenet_tiny" in out and "labels" in out


def test_every_shipped_recipe_parses():
    for path in (Path(__file__).parents[1] / "recipes").glob("*.yaml"):
        assert Recipe.from_yaml(path).name == path.stem


def test_run_recipe_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    budget = ["search.budget.macs=5e5"]  # written as in the README; YAML reads 5e5 as text
    assert main(["run", str(RECIPE), "--out", str(out), *overrides(TINY + budget)]) == 0
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["macs"] <= 500_000 and arch["budget"]["macs"] == 500_000
    results = (out / "results.md").read_text()
    for row in ("searched, inherited weights", "searched, retrained from scratch",
                "largest, retrained from scratch", "smallest, retrained from scratch"):
        assert f"| {row} |" in results
    assert (out / "subnet.safetensors").exists() and (out / "report.md").exists()
    assert "| searched, inherited weights |" in capsys.readouterr().out

    # a second run into the same directory is refused, and the result is kept
    assert main(["run", str(RECIPE), "--out", str(out), *overrides(TINY)]) == 2
    assert "already holds a result" in capsys.readouterr().err
    assert json.loads((out / "architecture.json").read_text()) == arch


def test_joint_recipe_searches_the_policy_and_retrains_with_it(tmp_path, capsys):
    out = tmp_path / "run"
    joint = RECIPE.with_name("digits_spos_dada.yaml")
    assert main(["run", str(joint), "--out", str(out),
                 *overrides(TINY + ["data.kwargs={batch_size: 64}", "search.budget.macs=5e5",
                                    "augment.options={update_every: 4, ops: [rotate, invert]}"])
                 ]) == 0
    policy = json.loads((out / "policy.json").read_text())
    assert policy["name"] == "dada" and len(policy["sub_policies"]) == 4  # 2 x 2 ordered pairs
    assert json.loads((out / "augment_search.json").read_text())["updates"] >= 1
    assert "(dada; `policy.json`, 4 sub-policies) and augments every retraining" in \
        (out / "results.md").read_text()


@pytest.mark.parametrize("strategy", ["darts", "gdas"])
def test_recipe_with_a_gradient_strategy(strategy, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(RECIPE), "--out", str(out),
                 *overrides(TINY + ["search.budget.macs=5e5", f"search.strategy={strategy}",
                                    "search.options={lr: 0.05}",
                                    "supernet.sampling=uniform"])]) == 0
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["strategy"] == strategy and arch["macs"] <= 500_000
    assert set(arch["probabilities"]) == set(arch["sample"])


def test_recipe_runs_on_two_processes_with_lightning_ddp(tmp_path):
    """trainer.strategy=ddp (gloo on CPU): rank 0 exports, every rank reads the export after a
    barrier, and only rank 0 writes the results."""
    exe = Path(sys.executable).with_name("nas-aug")
    out = tmp_path / "run"
    done = subprocess.run(
        [str(exe), "run", str(RECIPE), "--out", str(out),
         *overrides(TINY + ["search.budget.macs=5e5", "search.strategy=darts",
                            "supernet.sampling=uniform", "trainer.accelerator=cpu",
                            "trainer.devices=2", "trainer.strategy=ddp"])],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = (out / "results.md").read_text()
    assert "strategy: ddp" in results and "| searched, retrained from scratch |" in results
    assert json.loads((out / "architecture.json").read_text())["macs"] <= 500_000
    assert done.stdout.count("| searched, inherited weights |") == 1  # printed by rank 0 only


@pytest.mark.parametrize("item, message", [
    ("supernet.epoch=3", "unknown key recipe.supernet.epoch (did you mean 'epochs'?)"),
    ("supernet.epochs=ten", "recipe.supernet.epochs='ten' must be of type int"),
    ("data.name=cifar", "unknown dataset 'cifar'"),
    ("space.name=resnet", "unknown space 'resnet'"),
    ("supernet.sampling=greedy", "unknown sampling 'greedy'"),
    ("search.budget={macs: 10}", "below the smallest sub-network"),
    ("search.budget={mac: 5}", "unknown key recipe.search.budget.mac (did you mean 'macs'?)"),
    ("search.budget=600000", "recipe.search.budget must be a mapping"),
    ("search.budget.macs=lots", "recipe.search.budget.macs='lots' must be of type float or null"),
    ("name.x=1", "cannot apply 'name.x=1': name is"),
    ("data.kwargs={size: 8}", "data.kwargs ['size'] are not accepted by dataset 'digits'"),
    ("augment.method=dadda", "unknown augmentation search method 'dadda' (did you mean 'dada'?)"),
    ("augment={method: dada, options: {num_ops: [1]}}", "got unknown option(s) ['num_ops']"),
    ("augment.options={top_k: 5}", "augment.options need an augment.method"),
    ("search.strategy=enas", "unknown strategy 'enas'"),
    ("search.options={lr: 0.1}", "options ['lr'] belong to the gradient strategies"),
])
def test_bad_recipe_values_are_reported(tmp_path, capsys, item, message):
    code = main(["run", str(RECIPE), "--out", str(tmp_path / "run"),
                 *overrides(TINY + [item])])
    assert code == 2
    assert message in capsys.readouterr().err
