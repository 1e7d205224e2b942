"""``nas-aug run --resume``: a run killed (SIGKILL) in its search, then again in a retraining,
continues from its checkpoints and the saved search state, and ends with what an
uninterrupted run ends with; folders holding checkpoints are refused without a flag."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas_aug.cli import main

SCRIPT = Path(__file__).with_name("killed_recipe.py")


def run(out: Path, kill: str = "-", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), kill, *args],
                          capture_output=True, text=True, timeout=600)


def scored(done: subprocess.CompletedProcess) -> int:
    """The held-out scores a run of the script computed."""
    return sum(line.startswith("scored ") for line in done.stdout.splitlines())


def table(out: Path) -> list[str]:
    return [line for line in (out / "results.md").read_text().splitlines()
            if line.startswith("| ")]


def test_a_run_killed_in_its_search_and_in_a_retraining_resumes_to_the_same_result(tmp_path,
                                                                                    capsys):
    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads((tmp_path / "straight" / "architecture.json").read_text())

    out = tmp_path / "killed"
    killed = run(out, "score:4")  # the supernet is trained, its search under way
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert scored(killed) == 3
    checkpoints = out / "checkpoints"
    assert (checkpoints / "supernet" / "last.ckpt").is_file()
    assert not (checkpoints / "supernet" / "searched.ckpt").exists()
    assert not (out / "architecture.json").exists() and (out / "search_state.json").exists()

    # a folder holding checkpoints is refused without --resume or --overwrite, and so is
    # resuming it with another recipe; nothing in it changes
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    assert main(["run", "digits_spos", "--out", str(out)]) == 2
    assert "holds the checkpoints of an earlier run (checkpoints/): continue it with " \
           "--resume, or pass --overwrite to start afresh" in capsys.readouterr().err
    assert main(["run", "digits_spos", "--out", str(out), "--resume"]) == 2
    assert "holds a run of another recipe (" in (err := capsys.readouterr().err)
    assert "recipe.supernet.epochs: 2 then, 30 now" in err and "--overwrite" in err
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before

    again = run(out, "train:15", "--resume")  # search finished, then killed in retraining
    assert again.returncode == -9, again.stderr[-3000:]
    assert 0 < scored(again) <= scored(straight) - 2  # the saved scores were not recomputed
    assert (checkpoints / "supernet" / "searched.ckpt").is_file()
    assert (checkpoints / "retrain_searched" / "last.ckpt").is_file()
    assert json.loads((out / "architecture.json").read_text())["sample"] == expected["sample"]

    resumed = run(out, "-", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert scored(resumed) == 0  # the search's result came back from searched.ckpt
    arch = json.loads((out / "architecture.json").read_text())
    assert (arch["sample"], arch["score"]) == (expected["sample"], expected["score"])
    assert table(out) == table(tmp_path / "straight")  # the retrainings' test accuracy too
    assert "This run was resumed from its checkpoints" in (out / "results.md").read_text()


def test_a_run_that_stopped_before_its_first_checkpoint_is_started_again(tmp_path, capsys):
    """A run refused by Lightning (or killed) before any checkpoint leaves nothing to resume:
    the next run starts afresh without --overwrite."""
    for _ in range(2):
        assert main(["run", "digits_spos", "--out", str(tmp_path),
                     "--set", "trainer.devices=x"]) == 2
        assert "is refused by Lightning" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoints", "run.json"]


@pytest.mark.parametrize("args, message", [
    (["--resume"], "nothing to resume in"),
    (["--resume", "--overwrite"], "pass either --resume"),
])
def test_resume_needs_a_run_to_continue_and_excludes_overwrite(tmp_path, capsys, args, message):
    assert main(["run", "digits_spos", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
