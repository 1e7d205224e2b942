"""LightningCLI, a Lightning user's first habit: the callbacks, the strategies, the searchers, the
budget and the space are configured in YAML with ``class_path`` / ``init_args``, the fit runs
and exports; and what ``--print_config`` prints, fed back with ``fit --config``, fits too."""

import copy
import inspect
import json
import sys

import pytest
import torch
import yaml
from helpers import SMALL_SPACES
from jsonargparse import ArgumentParser, set_parsing_settings
from lightning.pytorch.cli import LightningCLI
from torch import nn

import nas_aug.search_spaces
from nas_aug import Budget, build_subnet, load_architecture
from nas_aug.augment import load_policy
from nas_aug.callbacks import AugmentSearch, OneShotNAS
from nas_aug.search_spaces import (
    MobileNetTiny,
    SearchSpace,
    create_space,
    list_spaces,
    register_space,
)
from nas_aug.strategies import DARTS, SPOS, Evolution

SPACE = SMALL_SPACES["mobilenet_tiny"]
MACS = 1_200_000  # between the tiny space's smallest (0.33M) and largest (2.06M) sub-network
OPS = ["rotate", "invert"]

BUDGETS = {
    "class_path": {"class_path": "nas_aug.Budget", "init_args": {"macs": MACS}},
    "mapping": {"macs": MACS},
}
STRATEGIES = {  # None: the default (SPOS), with its searcher
    "default": None,
    "SPOS": {"class_path": "nas_aug.strategies.SPOS", "init_args": {"sampling": "uniform"}},
    "DARTS": {"class_path": "nas_aug.strategies.DARTS", "init_args": {"lr": 0.05}},
}
EVOLUTION = {"class_path": "nas_aug.strategies.Evolution",
             "init_args": {"population_size": 4, "generations": 2}}


def one_shot_nas(export_dir, strategy: str, budget: str, seed: int = 0) -> dict:
    init_args = {"budget": copy.deepcopy(BUDGETS[budget]), "export_dir": str(export_dir),
                 "calibration_batches": 2, "progress": False, "seed": seed}
    if STRATEGIES[strategy] is not None:
        init_args["strategy"] = copy.deepcopy(STRATEGIES[strategy])
    if strategy != "DARTS":  # DARTS derives its architecture: it runs no outer searcher
        init_args["search"] = copy.deepcopy(EVOLUTION)
    return {"class_path": "nas_aug.callbacks.OneShotNAS", "init_args": init_args}


def augment_search(export_dir) -> dict:
    method = {"class_path": "nas_aug.augment.search.DadaSearch", "init_args": {"ops": OPS}}
    return {"class_path": "nas_aug.callbacks.AugmentSearch",
            "init_args": {"method": method, "export_dir": str(export_dir)}}


def config(tmp_path, callbacks: list) -> dict:
    return {
        "seed_everything": 0,
        "model": {"class_path": "helpers.LitClassifier", "init_args": {"backbone": {
            "class_path": "nas_aug.search_spaces.MobileNetTiny", "init_args": dict(SPACE)}}},
        "data": {"class_path": "nas_aug.data.DigitsDataModule"},
        "trainer": {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2,
                    "enable_progress_bar": False, "logger": False,
                    "enable_checkpointing": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "root"), "callbacks": callbacks},
    }


def write_config(path, data: dict):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def cli(monkeypatch):
    """Runs ``LightningCLI(args=...)`` in this process, as ``python fit.py ARGS`` would."""
    monkeypatch.setattr(sys, "argv", ["fit.py"])  # not pytest's own arguments
    # jsonargparse 5's behaviour now: a class_path given to an untyped (Any) argument is kept
    # as a dict, not instantiated; so every class a config names has a typed place to go
    set_parsing_settings(instantiate_subclass_spec_in_any=False)

    def run(*args: str, **kwargs) -> LightningCLI:
        return LightningCLI(args=list(args), **kwargs)

    return run


def callback(cli: LightningCLI, kind: type):
    found = [cb for cb in cli.trainer.callbacks if isinstance(cb, kind)]
    assert len(found) == 1, found
    return found[0]


def assert_exported(cli: LightningCLI, export_dir, strategy: str):
    nas = callback(cli, OneShotNAS)
    data = json.loads((export_dir / "architecture.json").read_text())
    assert data["strategy"] == strategy
    assert data["space"] == "mobilenet_tiny"
    assert data["budget"] == {"macs": MACS}
    assert data["space_kwargs"] == json.loads(json.dumps(cli.model.backbone.space_kwargs))
    arch = load_architecture(export_dir)
    assert arch.sample == nas.result.sample
    assert arch.macs == nas.result.chosen.macs <= MACS
    # the export rebuilds from space_kwargs alone; the fit left the winner active in the model
    subnet = build_subnet(arch).eval()
    x = torch.rand(8, 1, 8, 8)
    cli.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), cli.model(x))

    policy = load_policy(export_dir)
    assert policy.sub_policies
    assert set(policy.op_names) <= set(OPS)
    assert (export_dir / "policy.json").is_file()


@pytest.mark.parametrize("name", list_spaces())
def test_every_registered_space_has_a_class_a_config_can_name(name):
    kwargs = SMALL_SPACES.get(name, {})
    reference = create_space(name, **kwargs)
    cls = type(reference)
    assert cls.name == name
    assert getattr(nas_aug.search_spaces, cls.__name__) is cls  # exported: a class_path
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--backbone", type=nn.Module)
    spec = {"class_path": f"nas_aug.search_spaces.{cls.__name__}", "init_args": kwargs}
    net = parser.instantiate(parser.parse_args([f"--backbone={json.dumps(spec)}"])).backbone
    assert type(net) is cls
    assert (net.space_name, net.default_input_shape) == (name, reference.default_input_shape)
    # the config passes every argument (defaults too); they rebuild it through create_space
    assert set(net.space_kwargs) == set(inspect.signature(cls).parameters)
    assert kwargs.items() <= net.space_kwargs.items()
    rebuilt = create_space(name, **net.space_kwargs)
    assert str(rebuilt) == str(net) == str(reference)
    assert rebuilt.space_kwargs == net.space_kwargs
    direct = cls(**kwargs)  # the class itself is create_space's builder
    assert (direct.space_name, direct.space_kwargs) == (name, reference.space_kwargs)


def test_register_space_refuses_what_a_config_cannot_name():
    def my_space(width: int = 8) -> nn.Module:
        return nn.Linear(width, width)

    with pytest.raises(TypeError, match="SearchSpace subclass"):
        register_space(my_space)

    class Untyped(SearchSpace):
        name = "untyped_space"

        def __init__(self, width=8):
            super().__init__()

    with pytest.raises(TypeError, match="'width' has no type hint"):
        register_space(Untyped)

    class Loose(SearchSpace):
        name = "loose_space"

        def __init__(self, width: int = 8, **options: int):
            super().__init__()

    with pytest.raises(TypeError, match=r"takes \*options"):
        register_space(Loose)

    class Nameless(SearchSpace):
        def __init__(self, width: int = 8):
            super().__init__()

    with pytest.raises(ValueError, match="registry name"):
        register_space(Nameless)
    with pytest.raises(ValueError, match="already registered"):
        register_space(type("Again", (MobileNetTiny,), {"name": "mobilenet_tiny"}))
    assert not {"untyped_space", "loose_space"} & set(list_spaces())


def test_a_config_builds_the_callbacks_it_names(tmp_path, cli):
    """Both budget spellings, each strategy spelling, the searcher and the space, parsed."""
    callbacks = [one_shot_nas(tmp_path / "a", "default", "class_path", seed=0),
                 one_shot_nas(tmp_path / "b", "SPOS", "mapping", seed=1),  # distinct state_key
                 one_shot_nas(tmp_path / "c", "DARTS", "class_path", seed=2),
                 one_shot_nas(tmp_path / "d", "DARTS", "mapping", seed=3),
                 augment_search(tmp_path / "e")]
    path = write_config(tmp_path / "config.yaml", config(tmp_path, callbacks))
    parsed = cli("--config", str(path), run=False)

    nas = [cb for cb in parsed.trainer.callbacks if isinstance(cb, OneShotNAS)]
    assert [cb.export_dir for cb in nas] == [tmp_path / name for name in "abcd"]
    assert all(cb.budget == Budget(macs=MACS) for cb in nas)
    assert [type(cb.strategy) for cb in nas] == [SPOS, SPOS, DARTS, DARTS]
    assert nas[0].strategy.sampling == nas[1].strategy.sampling == "uniform"
    assert nas[2].strategy.lr == nas[3].strategy.lr == 0.05
    for cb in nas[:2]:
        assert isinstance(cb.search, Evolution)
        assert (cb.search.population_size, cb.search.generations) == (4, 2)
    assert repr(nas[0].strategy) == repr(nas[1].strategy)  # the default is SPOS(uniform)
    augment = callback(parsed, AugmentSearch)
    assert augment.method_name == "dada"
    assert augment.method.policy.ops == tuple(OPS)
    assert augment.export_dir == tmp_path / "e"

    backbone = parsed.model.backbone
    assert type(backbone) is MobileNetTiny
    reference = create_space("mobilenet_tiny", **backbone.space_kwargs)
    assert backbone.space_name == reference.space_name == "mobilenet_tiny"
    assert backbone.space_kwargs == {**SPACE, "min_depth": 1, "head_widths": [96, 128]}
    assert backbone.default_input_shape == reference.default_input_shape == (1, 8, 8)
    assert str(backbone) == str(reference)
    assert {k: v.shape for k, v in backbone.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}


@pytest.mark.parametrize("strategy, budget", [("default", "class_path"), ("DARTS", "mapping")])
def test_fit_from_a_config_searches_and_exports(tmp_path, cli, strategy, budget):
    export_dir = tmp_path / "export"
    callbacks = [one_shot_nas(export_dir, strategy, budget), augment_search(export_dir)]
    path = write_config(tmp_path / "config.yaml", config(tmp_path, callbacks))
    done = cli("fit", "--config", str(path))

    assert done.trainer.state.finished and done.trainer.current_epoch == 1
    assert_exported(done, export_dir, "darts" if strategy == "DARTS" else "spos")
    # LightningCLI's SaveConfigCallback wrote the config it ran, our objects included
    saved = yaml.safe_load((tmp_path / "root" / "config.yaml").read_text())
    assert saved["trainer"]["callbacks"][0]["class_path"] == "nas_aug.callbacks.OneShotNAS"
    assert saved["trainer"]["callbacks"][0]["init_args"]["budget"]["macs"] == MACS


def test_print_config_output_fits(tmp_path, cli, capsys):
    export_dir = tmp_path / "export"
    callbacks = [one_shot_nas(export_dir, "SPOS", "class_path"), augment_search(export_dir)]
    path = write_config(tmp_path / "config.yaml", config(tmp_path, callbacks))
    with pytest.raises(SystemExit) as exit_info:
        cli("fit", "--config", str(path), "--print_config")
    assert exit_info.value.code in (None, 0)
    printed = capsys.readouterr().out
    assert not export_dir.exists()  # printing fits nothing

    data = yaml.safe_load(printed)
    nas_config, augment_config = data["trainer"]["callbacks"]
    assert nas_config["init_args"]["strategy"]["class_path"] == "nas_aug.strategies.SPOS"
    assert nas_config["init_args"]["search"]["init_args"]["population_size"] == 4
    method = augment_config["init_args"]["method"]
    assert method["class_path"] == "nas_aug.augment.search.DadaSearch"
    assert method["init_args"]["ops"] == OPS
    assert data["model"]["init_args"]["backbone"]["class_path"] == \
        "nas_aug.search_spaces.MobileNetTiny"

    printed_path = tmp_path / "printed.yaml"
    printed_path.write_text(printed)
    done = cli("fit", "--config", str(printed_path))
    nas = callback(done, OneShotNAS)
    assert type(nas.strategy) is SPOS and nas.strategy.sampling == "uniform"
    assert nas.budget == Budget(macs=MACS)
    assert (nas.search.population_size, nas.search.generations) == (4, 2)
    assert callback(done, AugmentSearch).method.policy.ops == tuple(OPS)
    assert done.trainer.state.finished
    assert_exported(done, export_dir, "spos")
