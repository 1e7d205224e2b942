"""Pareto front exactness and the two search plots (PNG written atomically, no pyplot leak)."""

import os
import random
import subprocess
import sys

import pytest

from nas_aug.constraints import Budget
from nas_aug.plots import pareto_front, plot_pareto, plot_progress

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def brute_force_front(points):
    """O(n^2) reference: not dominated, and no earlier point equal in both coordinates."""
    front = []
    for i, (ci, si) in enumerate(points):
        dominated = any((cj <= ci and sj >= si and (cj < ci or sj > si))
                        or ((cj, sj) == (ci, si) and j < i)
                        for j, (cj, sj) in enumerate(points))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


@pytest.mark.parametrize("points, expected", [
    ([(1.0, 0.5)], [0]),
    ([], []),
    ([(1, 0.1), (2, 0.2), (3, 0.3)], [0, 1, 2]),            # all on the front
    ([(3, 0.3), (1, 0.1), (2, 0.2)], [1, 2, 0]),            # sorted by cost
    ([(1, 0.5), (2, 0.4), (3, 0.9), (3, 0.2)], [0, 2]),     # dominated points out
    ([(2, 0.5), (1, 0.5)], [1]),                            # same score, dearer: dominated
    ([(1, 0.4), (1, 0.5)], [1]),                            # same cost, worse: dominated
    ([(1, 0.5), (1, 0.5), (1, 0.5)], [0]),                  # equal points: first index only
    ([(2, 0.9), (1, 0.5), (2, 0.9), (1, 0.5)], [1, 0]),
    ([(5, float("-inf"))], [0]),
])
def test_pareto_front_hand_made(points, expected):
    assert pareto_front(points) == expected


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed):
    rng = random.Random(seed)
    floats = [(rng.uniform(0, 10), rng.uniform(0, 1)) for _ in range(200)]
    ties = [(rng.randint(0, 8), rng.randint(0, 8) / 8) for _ in range(200)]  # many ties
    for points in (floats, ties):
        assert pareto_front(points) == brute_force_front(points)


def test_pareto_front_rejects_bad_points():
    with pytest.raises(ValueError, match="point 1"):
        pareto_front([(1, 2), (1, float("nan"))])
    with pytest.raises(ValueError, match="point 0"):
        pareto_front([(1, 2, 3)])


def test_import_does_not_load_matplotlib():
    code = "import sys, nas_aug.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def fake_candidates(n=40, seed=0):
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        macs = rng.uniform(2e6, 12e6)
        t += rng.uniform(0.5, 2.0)
        out.append({"score": 0.8 + 0.015 * macs / 1e6 + rng.gauss(0, 0.02), "macs": int(macs),
                    "params": int(macs / 20), "seconds": t})
    return out


def check_png(path, directory):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    assert image.shape[:2] == (480, 720)  # 6 x 4 in at 120 dpi
    assert sorted(p.name for p in directory.iterdir()) == [path.name]  # no temp file left


@pytest.mark.parametrize("budget", [None, 8_000_000, Budget(macs=8_000_000)])
def test_plot_pareto_writes_png(tmp_path, budget):
    from matplotlib import pyplot

    before = pyplot.get_fignums()
    candidates = fake_candidates()
    path = plot_pareto(candidates, candidates[3], tmp_path / "pareto.png", budget=budget)
    assert path == tmp_path / "pareto.png"
    check_png(path, tmp_path)
    assert pyplot.get_fignums() == before


def test_plot_progress_writes_png(tmp_path):
    from matplotlib import pyplot

    before = pyplot.get_fignums()
    path = plot_progress(fake_candidates(), str(tmp_path / "progress.png"))
    check_png(path, tmp_path)
    assert pyplot.get_fignums() == before


def test_plots_overwrite_atomically(tmp_path):
    target = tmp_path / "progress.png"
    target.write_bytes(b"old")
    plot_progress(fake_candidates(5), target)
    check_png(target, tmp_path)


def test_single_candidate(tmp_path):
    (candidate,) = fake_candidates(1)
    check_png(plot_pareto([candidate], candidate, tmp_path / "p.png"), tmp_path)


@pytest.mark.parametrize("plot", ["pareto", "progress"])
def test_errors(tmp_path, plot):
    def draw(candidates, chosen=None):
        if plot == "pareto":
            return plot_pareto(candidates, chosen or fake_candidates(1)[0], tmp_path / "x.png")
        return plot_progress(candidates, tmp_path / "x.png")

    with pytest.raises(ValueError, match="no candidates to plot"):
        draw([])
    candidates = fake_candidates(4)
    del candidates[2]["seconds"]
    with pytest.raises(ValueError, match=r"candidate 2 has no 'seconds' key"):
        draw(candidates)
    candidates = fake_candidates(4)
    candidates[1]["score"] = float("nan")
    with pytest.raises(ValueError, match=r"candidate 1 has score=nan"):
        draw(candidates)
    with pytest.raises(TypeError, match="candidate 0 must be a dict"):
        draw([(1, 2)])
    assert list(tmp_path.iterdir()) == []


def test_pareto_errors_for_chosen_and_budget(tmp_path):
    candidates = fake_candidates(4)
    with pytest.raises(ValueError, match="chosen has no 'macs' key"):
        plot_pareto(candidates, {"score": 1.0}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="budget must be"):
        plot_pareto(candidates, candidates[0], tmp_path / "x.png", budget="8M")
    assert list(tmp_path.iterdir()) == []


def test_png_gets_the_umask_mode_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = plot_progress(fake_candidates(3), tmp_path / "progress.png")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
