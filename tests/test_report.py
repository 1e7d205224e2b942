"""report.md, ``nas-aug show`` and results.md say what the search did, and nothing it did not."""

import dataclasses

import pytest
import torch
from helpers import SMALL_SPACES, search_result
from torch import nn

from nas_aug.cli import main
from nas_aug.constraints import CostTable, TorchCounter
from nas_aug.export import Architecture, export_architecture
from nas_aug.recipe import Recipe, RetrainConfig, SupernetConfig, render_results
from nas_aug.report import (
    PARETO_FILE,
    REPORT_FILE,
    _human,
    architecture_summary,
    chosen_candidate,
    inactive_labels,
    render_report,
    write_report,
)
from nas_aug.search_spaces import create_space
from nas_aug.space import LayerChoice
from nas_aug.supernet import extract_subnet, space_of

KWARGS = SMALL_SPACES["mobilenet_tiny"]
INPUT_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def supernet():
    return create_space("mobilenet_tiny", **KWARGS)


@pytest.fixture(scope="module")
def table(supernet):
    return CostTable.build(supernet, INPUT_SHAPE, TorchCounter())


@pytest.fixture(scope="module")
def shallow(supernet):
    """The largest sample, but stage 0 one block deep: stage0.block1.* are inactive."""
    return {**space_of(supernet).largest(), "stage0.depth": 1}


def architecture(sample, **fields):
    return Architecture(space="mobilenet_tiny", space_kwargs=KWARGS, sample=sample,
                        input_shape=INPUT_SHAPE, **{"macs": 1000, "params": 100, **fields})


def test_inactive_labels_are_those_a_depth_switches_off(supernet, shallow):
    assert inactive_labels(supernet, shallow) == {"stage0.block1.expand", "stage0.block1.kernel"}
    assert inactive_labels(supernet, space_of(supernet).largest()) == set()


def test_a_gradient_report_ranks_by_probability_and_marks_the_chosen_network(
        tmp_path, supernet, table, shallow):
    # the chosen sample differs from its scored candidate only in an inactive label
    scored = {**shallow, "stage0.block1.kernel": 3}
    other = {**shallow, "stage1.depth": 1}
    top = [{"sample": scored, "score": 0.7, "macs": table(scored).macs,
            "params": table(scored).params, "seconds": 1.0, "probability": 0.3},
           {"sample": other, "score": 0.8, "macs": table(other).macs,
            "params": table(other).params, "seconds": 2.0, "probability": 0.125}]
    arch = architecture(shallow, score=0.7, top=top, strategy="darts",
                        probabilities={"stage0.depth": {"1": 0.9, "2": 0.1}})
    write_report(tmp_path, arch, top, supernet)
    report = (tmp_path / REPORT_FILE).read_text()
    assert report.startswith("# Searched architecture: `mobilenet_tiny`\n")
    assert "| stage0.block1.kernel | 5 | inactive |" in report
    assert "| stage0.block0.kernel | 5 |  |" in report
    assert "2 of 27 labels are inactive: without effect" in report
    assert "Ranked by probability" in report
    assert "| rank | probability | held-out score | MACs | params |" in report
    assert f"| 1 (chosen) | 0.3 | 0.7000 | {top[0]['macs']:,} | {top[0]['params']:,} |" in report
    assert f"| 2 | 0.125 | 0.8000 | {top[1]['macs']:,} |" in report
    assert (tmp_path / PARETO_FILE).read_bytes().startswith(b"\x89PNG")


def test_a_searcher_report_ranks_by_score(shallow):
    top = [{"sample": shallow, "score": 0.9, "macs": 1000, "params": 100, "seconds": 1.0}]
    report = render_report(architecture(shallow, score=0.9, top=top))
    assert "Ranked by held-out score (equal scores: fewer MACs first)." in report
    assert "| rank | held-out score | MACs | params |" in report
    assert "| 1 (chosen) | 0.9000 | 1,000 | 100 |" in report
    assert "| label | value |\n|---|---|\n" in report  # activity unknown: no column


def test_the_chosen_point_is_found_by_its_network_or_stands_alone(shallow):
    arch = architecture(shallow, score=0.5)
    variant = {"sample": {**shallow, "stage0.block1.kernel": 3}, "score": 0.6}
    inactive = {"stage0.block1.expand", "stage0.block1.kernel"}
    assert chosen_candidate(arch, [variant], inactive) is variant
    assert chosen_candidate(arch, [variant]) == {"score": 0.5, "macs": 1000, "params": 100,
                                                 "seconds": 0.0}
    assert chosen_candidate(architecture(shallow), [variant]) is None


class TinySpace(nn.Module):
    """A model of the user's own choice modules (as a converted NNI space is)."""

    def __init__(self):
        super().__init__()
        self.op = LayerChoice("op", [nn.Identity(), nn.ReLU()])

    def forward(self, x):
        return self.op(x)


@pytest.mark.parametrize("origin, words", [("nni", "converted NNI space"),
                                           ("custom", "custom supernet")])
def test_a_supernet_of_no_registered_space_is_named_by_its_class(tmp_path, origin, words):
    arch = Architecture(space=None, space_kwargs={}, sample={"op": 1}, input_shape=(4,),
                        macs=0, params=0, origin=origin, model_class="TinySpace")
    write_report(tmp_path, arch, [], TinySpace())
    title = (tmp_path / REPORT_FILE).read_text().splitlines()[0]
    assert title == f"# Searched architecture: `TinySpace` ({words})"
    unnamed = dataclasses.replace(arch, model_class=None)  # an export of an earlier version
    assert render_report(unnamed).splitlines()[0] == f"# Searched architecture: a {words}"


def table_rows(text):
    """The cells of each row of a printed summary."""
    return [[cell.strip() for cell in line.split("|")] for line in text.splitlines()
            if "|" in line]


def test_counts_read_as_lightning_prints_them():
    assert [_human(n) for n in (0, 999, 1000, 1234, 99_949, 123_456, 12_345_678,
                                3 * 10**9)] == [
        "0", "999", "1.0 K", "1.2 K", "99.9 K", "123 K", "12.3 M", "3.0 B"]


def test_summary_counts_every_stage_and_marks_inactive_blocks(supernet, shallow):
    subnet = extract_subnet(supernet, shallow, torch.zeros(1, *INPUT_SHAPE))
    text = architecture_summary(subnet, shallow, INPUT_SHAPE, supernet, counter="torch")
    rows = table_rows(text)[1:]
    stages = [row for row in rows if row[1]]
    assert [row[1] for row in stages] == ["stem", "stages.0", "stages.1", "stages.2",
                                          "stages.3", "head"]
    assert [row[2:4] for row in rows[1:4]] == [
        ["stage0", "depth=1"], ["stage0.block0", "expand=6, kernel=5"],
        ["stage0.block1", "expand=6, kernel=5 (inactive)"]]
    assert rows[-1][2:4] == ["head", "width=128"]
    count, example = TorchCounter(), torch.zeros(1, *INPUT_SHAPE)
    assert stages[0][4:] == [_human(count(subnet.stem, example)),
                             _human(sum(p.numel() for p in subnet.stem.parameters()))]
    total = count(subnet, example)
    assert f"\n{_human(total):<6} MACs (multiply-adds, one input of shape (1, 8, 8))\n" in text
    assert "outside the stages" not in text  # the stages hold every multiply-add
    assert text.endswith("the value is whatever the search held)")


def test_nas_aug_show_prints_an_export(tmp_path, capsys, supernet, table, shallow):
    export_architecture(tmp_path, supernet, search_result(shallow, INPUT_SHAPE, table(shallow),
                                                          score=0.75))
    assert main(["show", str(tmp_path), "--counter", "torch"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mobilenet_tiny, searched by spos: held-out heldout_top1 0.7500\n")
    assert ["", "", "stage0.block1", "expand=6, kernel=5 (inactive)", "", ""] in table_rows(out)
    subnet = extract_subnet(supernet, shallow, torch.zeros(1, *INPUT_SHAPE))
    params = sum(p.numel() for p in subnet.parameters())
    assert f"\n{_human(params):<6} Params\n" in out
    assert main(["show", str(tmp_path), "--counter", "flops"]) == 2
    assert "unknown MAC counter 'flops'; choose one of ['fvcore', 'torch']" in \
        capsys.readouterr().err


def recipe(supernet_epochs, retrain_epochs):
    return Recipe(name="tiny", supernet=SupernetConfig(epochs=supernet_epochs),
                  retrain=RetrainConfig(epochs=retrain_epochs))


@pytest.mark.parametrize("retrain_epochs, winner_s, expected", [
    (0, 0.0, "Supernet training + search: 12 s (1 epoch); the winner was not retrained "
             "(retrain.epochs is 0), so there is no search cost to set against a training "
             "of it. Whole run: 13 s."),
    (1, 0.31, "Supernet training + search: 12 s (1 epoch); one standalone training of the "
              "winner: 0.31 s (1 epoch), too short for the search cost to be meaningful as a "
              "multiple of it. Whole run: 13 s."),
    (3, 4.0, "Supernet training + search: 12 s (1 epoch); one standalone training of the "
             "winner: 4 s (3 epochs); search cost = 3.0x that training. Whole run: 13 s."),
])
def test_results_state_the_search_cost_only_against_a_real_training(retrain_epochs, winner_s,
                                                                    expected):
    rows = [{"model": "searched, inherited weights", "macs": 1200, "params": 30,
             "heldout": 0.5, "test": 0.25}]
    text = render_results(rows, recipe(1, retrain_epochs), 12.0, winner_s, 13.0)
    lines = text.splitlines()
    assert lines[4] == "| searched, inherited weights | 1,200 | 30 | 0.5000 | 0.2500 |"
    assert lines[6] == expected

