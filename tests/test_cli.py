"""The ``nas-aug`` command line: spaces and recipes listings, errors, and a whole recipe,
shrunk to seconds."""

import csv
import json
import logging
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

from nas_aug import cli, load_architecture
from nas_aug.augment import Policy
from nas_aug.cli import bundled_recipes, find_recipe, main
from nas_aug.recipe import LIGHTNING_LOGGERS, Recipe, make_search, run_recipe

RECIPE = Path(__file__).parents[1] / "recipes" / "digits_spos.yaml"
TINY = ["supernet.epochs=1", "retrain.epochs=1", "search.population_size=4",
        "search.generations=2", "search.calibration_batches=2",
        "space.kwargs={num_classes: 10, in_chans: 1, img_size: 8, expand_ratios: [3, 6], "
        "kernel_sizes: [3]}"]


def overrides(items):
    return [arg for item in items for arg in ("--set", item)]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def lightning_logs():
    """The records that reach Lightning's logger (which does not propagate to pytest's)."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    handler = _Records()
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def train_steps(csv_path):
    """The steps with a train_loss row in a CSVLogger's metrics.csv."""
    with open(csv_path, newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row["train_loss"]]


def test_console_script_lists_spaces():
    exe = Path(sys.executable).with_name("nas-aug")  # installed beside the interpreter
    assert exe.exists(), "the nas-aug entry point is not installed"
    out = subprocess.run([str(exe), "spaces"], capture_output=True, text=True, check=True).stdout
    assert "mobilenet_tiny" in out and "labels" in out


def test_every_shipped_recipe_parses():
    for path in (Path(__file__).parents[1] / "recipes").glob("*.yaml"):
        assert Recipe.from_yaml(path).name == path.stem


def test_run_recipe_end_to_end(tmp_path, capsys, lightning_logs):
    out = tmp_path / "run"
    budget = ["search.budget.macs=5e5"]  # written as in the README; YAML reads 5e5 as text
    assert main(["run", str(RECIPE), "--out", str(out), *overrides(TINY + budget)]) == 0
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["macs"] <= 500_000 and arch["budget"]["macs"] == 500_000
    results = (out / "results.md").read_text()
    for row in ("searched, inherited weights", "searched, retrained from scratch",
                "largest within budget, retrained from scratch",
                "largest, retrained from scratch", "smallest, retrained from scratch"):
        assert f"| {row} |" in results
    fits = re.search(r"\| largest within budget, retrained from scratch \| ([\d,]+) \|", results)
    assert int(fits.group(1).replace(",", "")) <= 500_000
    assert (out / "subnet.safetensors").exists() and (out / "report.md").exists()
    printed = capsys.readouterr()
    assert "| searched, inherited weights |" in printed.out
    assert "Epoch 0" in printed.out  # Lightning's progress bars print to stdout
    assert any(r.levelno == logging.INFO for r in lightning_logs)
    for fit in ("supernet", "retrain_searched"):  # every training step is in the CSV
        steps = train_steps(out / "logs" / fit / "metrics.csv")
        assert len(steps) >= 10 and steps == list(range(len(steps)))

    # a second run into the same directory is refused, and the result is kept
    assert main(["run", str(RECIPE), "--out", str(out), *overrides(TINY)]) == 2
    err = capsys.readouterr().err
    assert "holds the checkpoints of an earlier run" in err and "pass --overwrite to" in err
    assert "overwrite=True" not in err and "resume=True" not in err
    with pytest.raises(FileExistsError, match="pass overwrite=True"):  # Python's own words
        run_recipe(Recipe.from_yaml(RECIPE), out)
    assert json.loads((out / "architecture.json").read_text()) == arch


def test_joint_recipe_searches_the_policy_and_retrains_with_it(tmp_path, capsys,
                                                              lightning_logs):
    """Also run --quiet: no progress bars, no info logs (the callbacks' included), results
    printed."""
    out = tmp_path / "run"
    assert main(["run", "digits_spos_dada", "--out", str(out), "--quiet",
                 *overrides(TINY + ["data.kwargs={batch_size: 64}", "search.budget.macs=5e5",
                                    "augment.options={update_every: 4, ops: [rotate, invert]}"])
                 ]) == 0
    printed = capsys.readouterr()
    assert "| searched, retrained from scratch |" in printed.out and "Epoch 0" not in printed.out
    assert [r.getMessage() for r in lightning_logs if r.levelno < logging.WARNING] == []
    assert logging.getLogger("lightning.pytorch").level == logging.INFO  # restored
    policy = json.loads((out / "policy.json").read_text())
    # the distribution the fit trained with: one-op sub-policies in proportion to the op
    # weights, two drawn per sample
    assert policy["name"] == "dada" and policy["draws_per_sample"] == 2
    assert {tuple(op["name"] for op in ops) for ops in policy["sub_policies"]} == \
        {("rotate",), ("invert",)}
    assert json.loads((out / "augment_search.json").read_text())["updates"] >= 1
    assert f"(dada; `policy.json`, {len(policy['sub_policies'])} sub-policies, 2 drawn per " \
        "sample) and augments every retraining" in (out / "results.md").read_text()


def test_a_fixed_policy_augments_the_supernet_fit_and_every_retraining(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(RECIPE), "--out", str(out), "--quiet",
                 *overrides(TINY + ["search.budget.macs=5e5",
                                    "augment={policy: trivialaugment, base: true}"])]) == 0
    assert "The fixed augmentation policy 'trivialaugment+base' augments the supernet fit and " \
        "every retraining." in (out / "results.md").read_text()
    recipe = Recipe.from_dict({**yaml.safe_load(RECIPE.read_text()),
                               "augment": {"policy": "crop_flip"}})
    model, callbacks = make_search(recipe, tmp_path / "other")
    assert model.augment.policy == Policy.preset("crop_flip") and len(callbacks) == 1


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


def test_recipe_with_several_budgets_exports_and_retrains_each_winner(tmp_path):
    out = tmp_path / "run"
    budgets = ["search.budget={}", "search.budgets=[{macs: 4e5}, {macs: 8e5}]"]
    assert main(["run", str(RECIPE), "--out", str(out), *overrides(TINY + budgets)]) == 0
    results = (out / "results.md").read_text()
    for index, limit in enumerate((400_000, 800_000)):
        arch = load_architecture(out / f"budget_{index}")
        assert arch.macs <= limit and arch.budget == {"macs": limit}
        for how in ("inherited weights", "retrained from scratch"):
            assert (f"| searched within Budget(macs<={limit:,}), {how} | {arch.macs:,} | "
                    f"{arch.params:,} | {arch.score:.4f} |") in results
        fits = re.search(rf"\| largest within Budget\(macs<={limit:,}\), retrained from "
                         r"scratch \| ([\d,]+) \|", results)
        assert int(fits.group(1).replace(",", "")) <= limit
    assert "| largest, retrained from scratch |" in results
    assert "[budget_1](budget_1/report.md)" in (out / "budgets.md").read_text()


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
    ("augment.policy=trivial", "recipe.augment.policy: unknown policy preset 'trivial' (did you "
                               "mean 'trivialaugment'?)"),
    ("augment={method: dada, policy: none}", "recipe.augment sets both method 'dada'"),
    ("augment.base=true", "recipe.augment.base puts a fixed augment.policy inside crop + flip"),
    ("augment={policy: crop_flip, base: true}", "policy 'crop_flip' already runs ops before"),
    ("augment.base=yes please", "recipe.augment.base='yes please' must be of type bool"),
    ("search.strategy=enas", "unknown strategy 'enas'"),
    ("search.options={lr: 0.1}", "options ['lr'] belong to the gradient strategies"),
    ("trainer.devices=x", "recipe.trainer {'accelerator': 'auto', 'devices': 'x', "
                          "'precision': '32-true', 'strategy': 'auto'} is refused by Lightning: "
                          "`devices` selected with `CPUAccelerator` should be an int > 0"),
    ("trainer.precision=64-bits", "is refused by Lightning: Precision '64-bits' is invalid"),
    ("search.budgets=[{macs: 8e5}]", "recipe.search sets both budget {'macs': 600000} and budgets"),
    ("search={budget: {}, budgets: [{macs: 8e5}, {macs: 4e5}]}",
     "budgets must increase: budgets[1]=Budget(macs<=400,000) is not above budgets[0]"),
    ("search={budget: {}, budgets: [{macs: 8e5}, {}]}",
     "recipe.search.budgets[1] sets no limit; give it macs, params, flops or latency_ms"),
    ("search.budgets={macs: 8e5}", "recipe.search.budgets must be a list of mappings"),
    ("search.budgets=[{mac: 8e5}]",
     "unknown key recipe.search.budgets[0].mac (did you mean 'macs'?)"),
])
def test_bad_recipe_values_are_reported(tmp_path, capsys, item, message):
    code = main(["run", str(RECIPE), "--out", str(tmp_path / "run"),
                 *overrides(TINY + [item])])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bare_command_prints_the_help(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: nas-aug")


def test_version(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"nas-aug {metadata.version('nas_aug')}\n"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)  # a source tree on sys.path
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == "nas-aug unknown (not installed)\n"


def test_recipes_lists_every_bundled_recipe(capsys):
    assert list(bundled_recipes()) == sorted(p.stem for p in RECIPE.parent.glob("*.yaml"))
    assert main(["recipes"]) == 0
    header, *rows = [re.split(r"  +", line) for line in capsys.readouterr().out.splitlines()]
    assert header == ["recipe", "data", "cost", "device"]
    rows = {row[0]: row[1:] for row in rows}
    assert list(rows) == list(bundled_recipes())
    assert rows["digits_spos"] == ["digits", "30 supernet epochs + 4 retrainings x 30 epochs",
                                   "auto, devices=1, 32-true"]
    assert rows["cifar10_ddp"] == ["cifar10", "150 supernet epochs + 4 retrainings x 100 epochs",
                                   "gpu, devices=4, bf16-mixed, ddp_find_unused_parameters_true"]


def test_find_recipe_by_name_or_path(tmp_path, monkeypatch):
    bundled = bundled_recipes()["digits_spos"]
    assert bundled.read_text() == RECIPE.read_text()
    monkeypatch.chdir(tmp_path)  # outside the repository
    assert find_recipe("digits_spos") == bundled
    assert find_recipe("recipes/digits_spos.yaml") == bundled  # the README's words
    (tmp_path / "digits_spos").write_text("name: mine\n")  # a file wins over a name
    assert find_recipe("digits_spos") == Path("digits_spos")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "digits_spos.yaml").write_text("name: mine\n")
    assert find_recipe("recipes/digits_spos.yaml") == Path("recipes/digits_spos.yaml")


@pytest.mark.parametrize("value, message", [
    ("digits", "'digits' is neither a recipe file nor a bundled recipe (did you mean "
               "'digits_spos'?); the bundled recipes are cifar10_darts, cifar10_ddp, "
               "cifar10_spos, digits_spos, digits_spos_dada, fashion_mnist_spos"),
    ("my/digits_spos.yaml", "'my/digits_spos.yaml' is neither a recipe file nor a bundled "
                            "recipe (did you mean 'digits_spos'?)"),
])
def test_unknown_recipe_is_one_line_with_the_closest_name(tmp_path, monkeypatch, capsys,
                                                          value, message):
    monkeypatch.chdir(tmp_path)
    assert main(["run", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas-aug: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("below", [False, True])
def test_out_naming_a_file_is_refused_before_training(tmp_path, monkeypatch, capsys, below):
    def trained(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("nas_aug.recipe.make_datamodule", trained)
    file = tmp_path / "results.txt"
    file.write_text("not a directory")
    out = file / "run" if below else file
    assert main(["run", "digits_spos", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"nas-aug: error: output directory {str(out)!r} cannot be used: {str(file)!r} is a "
        "file; choose a directory (it is created if missing)\n")


@pytest.mark.parametrize("recipe_text, item, where", [
    ("name: broken\nsupernet: {epochs: 1\n", None, "line 3, column 1"),
    ("name: broken\nsupernet:\n  epochs: 1: 2\n", None, "line 3, column 12"),
    ("name: fine\n", "space.kwargs={a: [1}", "line 1, column 7"),
])
def test_invalid_yaml_is_one_line(tmp_path, capsys, recipe_text, item, where):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text)
    assert main(["run", str(path), *overrides([item] if item else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas-aug: error: ") and err.count("\n") == 1
    assert where in err and (item or str(path)) in err


def test_a_device_the_machine_lacks_is_one_line(tmp_path, capsys):
    assert main(["run", "digits_spos", "--out", str(tmp_path / "run"),
                 *overrides(TINY + ["trainer.accelerator=cpu", "trainer.devices=0"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas-aug: error: `Trainer(devices=0)` value is not a valid input")
    assert err.count("\n") == 1


@pytest.mark.parametrize("error, message", [
    (PermissionError(13, "Permission denied", "recipe.yaml"),
     "[Errno 13] Permission denied: 'recipe.yaml'"),
    (IsADirectoryError(21, "Is a directory", "recipes"), "[Errno 21] Is a directory: 'recipes'"),
    (NotADirectoryError(20, "Not a directory", "run/x"), "[Errno 20] Not a directory: 'run/x'"),
    (FileNotFoundError(2, "No such file or directory", "x"),
     "[Errno 2] No such file or directory: 'x'"),
    (ImportError("onnx export needs onnx: pip install nas_aug[onnx]"),
     "onnx export needs onnx: pip install nas_aug[onnx]"),
    (RuntimeError("a failed\n  collective"), "a failed collective"),
    (MisconfigurationException("No supported gpu backend found!"),
     "No supported gpu backend found!"),
    (yaml.YAMLError("not YAML"), "not YAML"),
])
def test_user_errors_are_one_line(monkeypatch, capsys, error, message):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_recipes", fail)
    assert main(["recipes"]) == 2
    assert capsys.readouterr().err == f"nas-aug: error: {message}\n"


@pytest.mark.parametrize("error", [KeyError("label"), TypeError("bug"), AttributeError("bug")])
def test_bugs_keep_their_traceback(monkeypatch, error):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_recipes", fail)
    with pytest.raises(type(error)):
        main(["recipes"])
