"""The export as one transaction: a kill at any point leaves the old or the new export whole,
no file of the user's is replaced or removed without ``overwrite``, and a file changed after
the export (truncated, copied in, not JSON, of the wrong type) is refused with its name."""

import json
import os
import random
import shutil

import pytest
import torch
from helpers import SMALL_SPACES, calibrate, search_result

from nas_aug import build_subnet, load_architecture
from nas_aug.constraints import CostTable
from nas_aug.export import ARCHITECTURE_FILE, WEIGHTS_FILE, check_export_dir, export_architecture
from nas_aug.io import MANIFEST_FILE, finish_pending
from nas_aug.report import REPORT_FILE
from nas_aug.search_spaces import create_space
from nas_aug.supernet import extract_subnet, space_of

SHAPE = (1, 8, 8)
USER_FILE = "notes.txt"


@pytest.fixture(scope="module")
def supernet():
    return calibrate(create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"]), SHAPE)


@pytest.fixture(scope="module")
def results(supernet):
    """Two results: the first with candidates (so its plots and candidates.json are stale
    once the second, without, is exported over it)."""
    table, space = CostTable.build(supernet, SHAPE), space_of(supernet)
    first, second = space.random(random.Random(1)), space.random(random.Random(2))
    assert first != second
    candidates = [{"sample": first, "score": 0.5, "macs": table(first).macs,
                   "params": table(first).params, "seconds": 0.1}]
    return (search_result(first, SHAPE, table(first), score=0.5, candidates=candidates),
            search_result(second, SHAPE, table(second), score=0.75))


def files(directory):
    """The visible files of ``directory`` and their contents (hidden ones are unfinished)."""
    return {p.name: p.read_bytes() for p in directory.iterdir()
            if p.is_file() and not p.name.startswith(".")}


class Killed(BaseException):
    """The process died here: no cleanup code runs (an ``except Exception`` does not catch
    it, and every later file operation dies too)."""


def file_operations(monkeypatch, die_after=None):
    """Count (and after ``die_after`` of them, refuse) the renames and removals of files."""
    done = []

    def counted(operation):
        def run(*args, **kwargs):
            if die_after is not None and len(done) >= die_after:
                raise Killed
            done.append(operation.__name__)
            return operation(*args, **kwargs)
        return run

    for name in ("replace", "rename", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, counted(getattr(os, name)))
    return done


def test_a_kill_at_any_point_leaves_the_old_or_the_new_export_whole(tmp_path, supernet,
                                                                    results, monkeypatch):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    export_architecture(old_dir, supernet, results[0])
    (old_dir / USER_FILE).write_text("mine")
    shutil.copytree(old_dir, new_dir)
    with monkeypatch.context() as patch:
        done = file_operations(patch)
        export_architecture(new_dir, supernet, results[1], overwrite=True)
    steps = len(done)
    old, new = files(old_dir), files(new_dir)
    assert set(old) - set(new) == {"candidates.json", "pareto.png", "progress.png"}
    assert old[USER_FILE] == new[USER_FILE] == b"mine"

    outcomes = []
    for step in range(steps):  # killed before the step-th file operation
        directory = tmp_path / f"killed_{step}"
        shutil.copytree(old_dir, directory)
        with monkeypatch.context() as patch, pytest.raises(Killed):
            file_operations(patch, die_after=step)
            export_architecture(directory, supernet, results[1], overwrite=True)
        arch = load_architecture(directory)  # the next process: finishes a set written whole
        state = files(directory)
        assert state in (old, new), (step, sorted(state))
        assert arch.sample == results[state == new].sample
        build_subnet(arch)  # its weights match it (checked against the manifest)
        outcomes.append("new" if state == new else "old")
    assert outcomes[0] == "old" and outcomes[-1] == "new"
    assert outcomes == sorted(outcomes, key=lambda outcome: outcome == "new")  # one switch


def test_counting_the_steps_of_an_export(tmp_path, supernet, results, monkeypatch):
    # the kill test above is only as good as its count of file operations
    with monkeypatch.context() as patch:
        done = file_operations(patch)
        export_architecture(tmp_path, supernet, results[0])
    assert done.count("rename") == 1  # the whole set becomes the new export at once
    assert done.count("replace") >= len(files(tmp_path))


def test_the_users_files_are_never_replaced_or_removed_without_overwrite(tmp_path, supernet,
                                                                        results):
    (tmp_path / REPORT_FILE).write_text("my report")
    (tmp_path / "timm.json").write_text("{}")  # the user's own, not written by an export
    (tmp_path / USER_FILE).write_text("mine")
    for refuse in (lambda: check_export_dir(tmp_path),
                   lambda: export_architecture(tmp_path, supernet, results[0])):
        with pytest.raises(FileExistsError, match=r"report\.md, timm\.json.*overwrite=True"):
            refuse()
    assert files(tmp_path) == {REPORT_FILE: b"my report", "timm.json": b"{}",
                               USER_FILE: b"mine"}

    export_architecture(tmp_path, supernet, results[0], overwrite=True)
    assert (tmp_path / REPORT_FILE).read_text() != "my report"  # the export writes it
    assert (tmp_path / "timm.json").read_text() == "{}"  # neither written nor an export's
    export_architecture(tmp_path, supernet, results[1], overwrite=True)
    assert (tmp_path / "timm.json").read_text() == "{}" and (tmp_path / USER_FILE).exists()
    assert not (tmp_path / "candidates.json").exists()  # the first export's, now stale


def test_what_a_killed_export_left_is_cleaned_or_finished(tmp_path, supernet, results):
    export_architecture(tmp_path, supernet, results[0])
    stray = [tmp_path / ".architecture.tmp.x1y2.json", tmp_path / ".nas_aug-staging-abc"]
    stray[0].write_text("{")
    stray[1].mkdir()
    (stray[1] / WEIGHTS_FILE).write_bytes(b"half")
    export_architecture(tmp_path, supernet, results[1], overwrite=True)
    assert not any(path.exists() for path in stray)

    # a set written whole, killed while moving in: a reader finishes the move
    pending = tmp_path / ".nas_aug-commit"
    pending.mkdir()
    shutil.copy(tmp_path / ARCHITECTURE_FILE, pending / ARCHITECTURE_FILE)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    (pending / MANIFEST_FILE).write_text(json.dumps({**data, "remove": [REPORT_FILE]}))
    assert load_architecture(tmp_path).sample == results[1].sample
    assert not pending.exists() and not (tmp_path / REPORT_FILE).exists()
    finish_pending(tmp_path)  # nothing left to do


@pytest.fixture
def exported(tmp_path, supernet, results):
    export_architecture(tmp_path, supernet, results[0])
    return tmp_path


def test_a_truncated_weights_file_is_named(exported):
    weights = exported / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{weights}.*changed, truncated or copied in"):
        build_subnet(load_architecture(exported))
    (exported / MANIFEST_FILE).unlink()  # unchecked: safetensors itself finds it broken
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
        build_subnet(load_architecture(exported))
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="no weights file at .*weights=False"):
        build_subnet(load_architecture(exported))


def test_weights_of_another_export_are_refused(tmp_path, supernet, results, exported):
    other = tmp_path / "other"
    export_architecture(other, supernet, results[1])
    shutil.copy(other / WEIGHTS_FILE, exported / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=f"{WEIGHTS_FILE} is not the file written with"):
        build_subnet(load_architecture(exported))


@pytest.mark.parametrize("edit, message", [
    (lambda text: text[:len(text) // 2], r"is not valid JSON \(architecture\): .* \(line \d+ "
                                         r"column \d+; the file ends there: truncated\?\)"),
    (lambda text: text.replace('"input_shape": [', '"input_shape": ["x", '),
     r"field 'input_shape' must be a list of int, got list \['x', 1, 8, 8\]"),
    (lambda text: text.replace('"input_shape": [\n    1,\n    8,\n    8\n  ]',
                               '"input_shape": "1x8x8"'),
     r"field 'input_shape' must be a list of int, got str '1x8x8'"),
    (lambda text: text.replace('"input_shape": [\n    1,', '"input_shape": [\n    0,'),
     r"field 'input_shape' must list positive sizes"),
    (lambda text: text.replace('"sample": {', '"sample": ["x"], "_": {'), "unknown fields"),
    (lambda text: text.replace('"score": 0.5', '"score": "high"'),
     r"field 'score' must be float or null, got str 'high'"),
])
def test_a_broken_architecture_file_is_named_with_the_field(exported, edit, message):
    path = exported / ARCHITECTURE_FILE
    text = path.read_text()
    assert edit(text) != text
    path.write_text(edit(text))
    (exported / MANIFEST_FILE).unlink()  # edited by hand: read as it is
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        load_architecture(exported)


def test_an_architecture_file_edited_after_the_export_is_refused_until_told(exported):
    path = exported / ARCHITECTURE_FILE
    path.write_text(path.read_text().replace('"score": 0.5', '"score": 0.9'))
    with pytest.raises(ValueError, match=f"delete {exported / MANIFEST_FILE} to read"):
        load_architecture(exported)
    (exported / MANIFEST_FILE).unlink()
    assert load_architecture(exported).score == 0.9


def test_a_broken_manifest_is_named(exported):
    (exported / MANIFEST_FILE).write_text('{"files": ')
    with pytest.raises(ValueError, match=f"{exported / MANIFEST_FILE} is not valid JSON"):
        load_architecture(exported)


def test_the_weights_load_as_exported(exported, supernet, results):
    net = build_subnet(load_architecture(exported)).eval()
    x = torch.randn(2, *SHAPE)
    expected = extract_subnet(supernet, results[0].sample, x).eval()
    torch.testing.assert_close(net(x), expected(x))


def test_weights_that_do_not_fit_the_architecture_are_named(tmp_path, supernet, results,
                                                            exported):
    other = tmp_path / "other"
    export_architecture(other, supernet, results[1])
    shutil.copy(other / WEIGHTS_FILE, exported / WEIGHTS_FILE)
    (exported / MANIFEST_FILE).unlink()  # unchecked: the shapes give it away
    with pytest.raises(ValueError, match=rf"the weights in {exported / WEIGHTS_FILE} do not "
                                         rf"fit the network {exported / ARCHITECTURE_FILE}"):
        build_subnet(load_architecture(exported))
