"""A search killed (SIGKILL) in the middle of its evolution continues from its saved state
when the fit is run again, and finds what an uninterrupted run finds."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("killed_search.py")


def run(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *args], capture_output=True,
                          text=True, timeout=600)


def test_a_killed_evolution_resumes_from_its_state_file_with_the_same_winner(tmp_path):
    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads((tmp_path / "straight" / "found.json").read_text())
    assert not (tmp_path / "straight" / "arch" / "search_state.json").exists()  # cleaned up

    out = tmp_path / "killed"
    killed = run(out, "7")  # seven scores in: the second generation is under way
    assert killed.returncode == -9, killed.stderr[-3000:]
    state = json.loads((out / "arch" / "search_state.json").read_text())
    assert len(state["state"]["searcher"]["history"]) == 7
    assert not (out / "arch" / "architecture.json").exists()

    resumed = run(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing the search saved in" in resumed.stderr
    found = json.loads((out / "found.json").read_text())
    assert found["history"] == expected["history"]  # every score, in order
    assert (found["sample"], found["score"]) == (expected["sample"], expected["score"])
    # the 7 saved scores were not computed again, except the winner's once if it is among
    # them (an uninterrupted search reads the winner's final score from its own scores)
    assert expected["scored"] - 7 <= found["scored"] <= expected["scored"] - 6
    arch = json.loads((out / "arch" / "architecture.json").read_text())
    assert arch["sample"] == expected["sample"]
