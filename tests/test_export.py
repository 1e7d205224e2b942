import hashlib
import json
import random
import stat

import pytest
import torch
from helpers import SMALL_SPACES, calibrate, search_result
from safetensors.torch import load_file
from torch import nn

from nas_aug import build_subnet, load_architecture
from nas_aug.constraints import CostTable
from nas_aug.export import (
    ARCHITECTURE_FILE,
    CANDIDATES_FILE,
    FORMAT,
    WEIGHTS_FILE,
    check_export_dir,
    export_architecture,
)
from nas_aug.io import MANIFEST_FILE, atomic_write
from nas_aug.report import PARETO_FILE, PROGRESS_FILE, REPORT_FILE
from nas_aug.search_spaces import create_space
from nas_aug.supernet import activate, choice_modules, space_of

KWARGS = SMALL_SPACES["mobilenet_tiny"]
INPUT_SHAPE = (1, 8, 8)



def calibrated_supernet() -> nn.Module:
    return calibrate(create_space("mobilenet_tiny", **KWARGS), INPUT_SHAPE)


@pytest.fixture(scope="module")
def supernet():
    return calibrated_supernet()


@pytest.fixture(scope="module")
def table(supernet):
    return CostTable.build(supernet, INPUT_SHAPE)


@pytest.fixture
def sample(supernet):
    return space_of(supernet).random(random.Random(4))


@pytest.fixture
def exported(tmp_path, supernet, table, sample):
    directory = tmp_path / "run" / "export"
    top = [{"score": 0.9, "macs": 1000, "params": 10, "sample": sample}]
    arch = export_architecture(directory, supernet, search_result(
        sample, INPUT_SHAPE, table(sample), score=0.875, budget={"macs": 2_000_000}, top=top))
    return directory, arch


def test_export_writes_the_three_files_and_their_manifest(exported, sample, table):
    directory, arch = exported
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [ARCHITECTURE_FILE, WEIGHTS_FILE, REPORT_FILE, MANIFEST_FILE])
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    assert sorted(manifest["files"]) == sorted([ARCHITECTURE_FILE, WEIGHTS_FILE, REPORT_FILE])
    for name, digest in manifest["files"].items():
        content = (directory / name).read_bytes()
        assert digest == {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert len(set(modes.values())) == 1, modes  # the weights too (safetensors writes 0600)
    data = json.loads((directory / ARCHITECTURE_FILE).read_text())
    assert data["format"] == FORMAT
    assert data["space"] == "mobilenet_tiny"
    assert data["space_kwargs"] == KWARGS
    assert data["sample"] == sample
    assert data["input_shape"] == list(INPUT_SHAPE)
    cost = table(sample)
    assert (data["macs"], data["params"]) == (cost.macs, cost.params)
    assert data["score"] == 0.875
    assert data["budget"] == {"macs": 2_000_000}
    assert data["weights"] == WEIGHTS_FILE
    assert "directory" not in data
    assert arch.directory == directory and arch.sample == sample
    report = (directory / REPORT_FILE).read_text()
    assert "mobilenet_tiny" in report and f"{cost.macs:,}" in report and "0.8750" in report
    assert "| stage0.depth |" in report and "## Best candidates" in report


def test_candidates_plots_and_search_cost_are_reported(tmp_path, supernet, table, sample):
    space = space_of(supernet)
    rng = random.Random(0)
    candidates = [{"score": 0.5 + i / 100, "macs": table(s).macs, "params": table(s).params,
                   "seconds": float(i), "sample": s}
                  for i, s in enumerate(space.random(rng) for _ in range(6))]
    cost = {"train_seconds": 12.0, "search_seconds": 3.0, "devices": 1, "device": "cpu",
            "device_hours": 15 / 3600, "energy_kwh": 0.0001, "co2_kg": 0.0000475,
            "method": "assumed 10 W per CPU core"}
    export_architecture(tmp_path, supernet, search_result(
        candidates[-1]["sample"], INPUT_SHAPE, table(candidates[-1]["sample"]), score=None,
        candidates=candidates, search_cost=cost))
    assert json.loads((tmp_path / CANDIDATES_FILE).read_text()) == candidates
    assert json.loads((tmp_path / ARCHITECTURE_FILE).read_text())["search_cost"] == cost
    for plot in (PARETO_FILE, PROGRESS_FILE):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")
    report = (tmp_path / REPORT_FILE).read_text()
    assert f"![{PARETO_FILE}]({PARETO_FILE})" in report and "| candidates evaluated | 6 |" in report
    assert "| supernet training | 12.0 s |" in report and "assumed 10 W per CPU core" in report


def test_weights_are_safetensors_not_pickle(exported, supernet, sample):
    directory, _ = exported
    raw = (directory / WEIGHTS_FILE).read_bytes()
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # pickle / torch zip
    state = load_file(str(directory / WEIGHTS_FILE))
    subnet = build_subnet(load_architecture(directory), weights=False)
    assert state.keys() == subnet.state_dict().keys()
    assert all(v.shape == subnet.state_dict()[k].shape for k, v in state.items())


@pytest.mark.parametrize("where", ["dir", "file"])
def test_rebuilt_subnet_equals_the_supernet(exported, supernet, sample, where):
    directory, arch = exported
    loaded = load_architecture(directory if where == "dir" else directory / ARCHITECTURE_FILE)
    assert loaded == arch
    assert loaded.directory == directory
    subnet = build_subnet(loaded).eval()
    assert choice_modules(subnet) == []
    x = torch.randn(4, *INPUT_SHAPE)
    activate(supernet, sample)
    with torch.no_grad():
        expected = supernet(x)
        assert torch.allclose(subnet(x), expected, rtol=1e-4, atol=1e-5)
        # the check means something: another sample gives another output
        activate(supernet, space_of(supernet).smallest())
        assert not torch.allclose(supernet(x), expected, atol=1e-3)


def test_rebuilt_without_weights_has_the_structure_only(exported):
    directory, _ = exported
    arch = load_architecture(directory)
    trained, fresh = build_subnet(arch), build_subnet(arch, weights=False)
    assert choice_modules(fresh) == []
    assert [(n, type(m)) for n, m in fresh.named_modules()] == [
        (n, type(m)) for n, m in trained.named_modules()]
    shapes = {k: v.shape for k, v in trained.state_dict().items()}
    assert {k: v.shape for k, v in fresh.state_dict().items()} == shapes
    conv = "stem.conv.weight"
    assert not torch.equal(fresh.state_dict()[conv], trained.state_dict()[conv])
    assert torch.equal(trained.state_dict()[conv], load_file(str(directory / WEIGHTS_FILE))[conv])


def test_check_export_dir(tmp_path):
    check_export_dir(tmp_path / "missing")  # nothing there yet
    check_export_dir(tmp_path)
    (tmp_path / ARCHITECTURE_FILE).write_text("{}")
    with pytest.raises(FileExistsError) as err:
        check_export_dir(tmp_path)
    assert repr(str(tmp_path)) in str(err.value)
    assert "overwrite=True" in str(err.value)
    check_export_dir(tmp_path, overwrite=True)


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write(target, lambda p: p.write_text("one"))
    atomic_write(target, lambda p: p.write_text("two"))
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def failing(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_load_architecture_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=ARCHITECTURE_FILE):
        load_architecture(tmp_path)


@pytest.mark.parametrize("content", [
    {"space": "mobilenet_tiny", "sample": {}},
    {"format": "other/1", "space": "x"},
    [1, 2, 3],
    "just text",
])
def test_load_architecture_rejects_other_json(tmp_path, content):
    path = tmp_path / ARCHITECTURE_FILE
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=FORMAT):
        load_architecture(path)


def test_load_architecture_rejects_an_incomplete_file(tmp_path):
    path = tmp_path / ARCHITECTURE_FILE
    path.write_text(json.dumps({"format": FORMAT, "space": "mobilenet_tiny"}))
    with pytest.raises(ValueError, match="sample"):
        load_architecture(path)


def edit_sample(directory, edit) -> None:
    path = directory / ARCHITECTURE_FILE
    data = json.loads(path.read_text())
    edit(data["sample"])
    path.write_text(json.dumps(data))
    (directory / MANIFEST_FILE).unlink()  # edited by hand: read as it is


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update({"stage0.dpth": 1}), r"unknown label 'stage0.dpth'.*did you mean"),
    (lambda s: s.update({"stage0.block0.kernel": 7}),
     r"stage0.block0.kernel=7 is not one of \[3, 5\]"),
    (lambda s: s.pop("head.width"), r"missing labels \['head.width'\]"),
])
def test_bad_sample_in_the_file_is_named(exported, edit, message):
    directory, _ = exported
    edit_sample(directory, edit)
    with pytest.raises(ValueError, match=message) as err:
        build_subnet(load_architecture(directory))
    assert str(err.value).startswith(f"{directory / ARCHITECTURE_FILE}: invalid sample: ")


def test_build_subnet_needs_a_named_space(tmp_path, sample, table):
    net = nn.Sequential(create_space("mobilenet_tiny", **KWARGS))  # the user's own supernet
    arch = export_architecture(tmp_path, net, search_result(sample, INPUT_SHAPE, table(sample)))
    assert arch.space is None
    with pytest.raises(ValueError, match="names no registered space"):
        build_subnet(load_architecture(tmp_path))
