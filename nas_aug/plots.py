"""Plots of a finished search: held-out score against MACs with the Pareto front, progress, and
how a differentiable policy's per-op choices moved over the fit.

Each candidate is a dict (a :class:`~nas_aug.result.Candidate` as JSON) with at least
``score`` (held-out score, higher is better), ``macs`` (multiply-adds, fvcore's "flops"),
``params`` and ``seconds`` (elapsed seconds since the search began when the candidate
finished). The plots are PNG files written atomically. matplotlib is
imported only when a plot is drawn, and only through ``matplotlib.figure.Figure`` with the Agg
canvas: no pyplot, no global backend switch, no figures left open.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from .io import atomic_write
from .result import CANDIDATE_KEYS

FIGSIZE = (6.0, 4.0)  # inches
DPI = 120


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(cost, score)`` points (cost minimised, score maximised).

    The indices come sorted by cost ascending. A point is dropped when another one is no worse
    in both coordinates and better in one; of points equal in both, only the first index stays.
    O(n log n).

    >>> pareto_front([(3.0, 0.9), (1.0, 0.5), (2.0, 0.4), (1.0, 0.5), (2.0, 0.8)])
    [1, 4, 0]
    >>> pareto_front([])
    []
    """
    pairs = []
    for i, point in enumerate(points):
        try:
            cost, score = (float(v) for v in point)
        except (TypeError, ValueError):
            raise ValueError(f"point {i} must be a (cost, score) pair of numbers, "
                             f"got {point!r}") from None
        if math.isnan(cost) or math.isnan(score):
            raise ValueError(f"point {i} has a NaN coordinate: {point!r}")
        pairs.append((cost, score))
    # cheapest first; at equal cost the best score first; at equal points the first index first
    order = sorted(range(len(pairs)), key=lambda i: (pairs[i][0], -pairs[i][1], i))
    front: list[int] = []
    best = None
    for i in order:
        if best is None or pairs[i][1] > best:
            front.append(i)
            best = pairs[i][1]
    return front


def plot_pareto(candidates: Sequence[Mapping[str, Any]],
                chosen: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                path: str | os.PathLike, budget: Any = None, chosen_label: str = "chosen"
                ) -> Path:
    """Scatter held-out score against MACs, with the Pareto front, the chosen one and the budget.

    ``budget`` is a MAC limit (a number, or an object with a ``macs`` attribute such as
    :class:`nas_aug.Budget`), drawn as a vertical dashed line; ``None`` draws none. ``chosen``
    and ``budget`` may also be lists, one chosen candidate per budget (a search for several
    budgets; an empty list marks none), drawn as stars with the legend ``chosen_label``.
    Writes a PNG to ``path`` atomically and returns the path.
    """
    _check_candidates(candidates)
    chosen_list = [chosen] if isinstance(chosen, Mapping) else list(chosen)
    for one in chosen_list:
        _check_candidate(one, "chosen")
    budgets = list(budget) if isinstance(budget, (list, tuple)) else [budget]
    budget_lines = [macs for macs in map(_budget_macs, budgets) if macs is not None]
    macs = [float(c["macs"]) / 1e6 for c in candidates]
    scores = [float(c["score"]) for c in candidates]
    front = pareto_front(list(zip(macs, scores)))
    front_x = [macs[i] for i in front] + [max(macs)]
    front_y = [scores[i] for i in front] + [scores[front[-1]]]

    fig, ax = _figure()
    ax.scatter(macs, scores, s=14, color="tab:blue", alpha=0.45, linewidths=0,
               label=f"candidates ({len(candidates)})", zorder=2)
    ax.step(front_x, front_y, where="post", color="tab:orange", linewidth=1.6,
            label=f"Pareto front ({len(front)})", zorder=3)
    if chosen_list:
        ax.scatter([float(c["macs"]) / 1e6 for c in chosen_list],
                   [float(c["score"]) for c in chosen_list], marker="*", s=180,
                   color="tab:red", edgecolors="black", linewidths=0.6, label=chosen_label,
                   zorder=4)
    for index, budget_macs in enumerate(budget_lines):
        ax.axvline(budget_macs / 1e6, color="0.3", linestyle="--", linewidth=1.1,
                   label="budget" if index == 0 else None, zorder=1)
    ax.set_xlabel("MACs (M, multiply-adds)")
    ax.set_ylabel("held-out score")
    ax.set_title("Held-out score vs. MACs of the evaluated architectures")
    return _finish(fig, ax, path)


def plot_progress(candidates: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Best-so-far held-out score against search time, with each candidate's score as a dot.

    Writes a PNG to ``path`` atomically and returns the path.
    """
    _check_candidates(candidates)
    runs = sorted((float(c["seconds"]), float(c["score"])) for c in candidates)
    times = [t for t, _ in runs]
    scores = [s for _, s in runs]
    best, best_so_far = -math.inf, []
    for score in scores:
        best = max(best, score)
        best_so_far.append(best)

    fig, ax = _figure()
    ax.scatter(times, scores, s=14, color="tab:blue", alpha=0.45, linewidths=0,
               label=f"candidates ({len(candidates)})", zorder=2)
    ax.step(times, best_so_far, where="post", color="tab:orange", linewidth=1.6,
            label="best so far", zorder=3)
    ax.set_xlabel("search time (s)")
    ax.set_ylabel("held-out score")
    ax.set_title("Search progress")
    ax.set_xlim(left=0)
    return _finish(fig, ax, path)


POLICY_HISTORY_KEYS = ("weight", "probability", "magnitude")


def plot_policy_history(history: Sequence[Mapping[str, Any]], ops: Sequence[str],
                        path: str | os.PathLike) -> Path:
    """Each op's weight (the chance a slot draws it), application probability and magnitude
    at the end of every epoch, one panel each: ``history`` is ``DadaSearch.history`` (dicts
    with ``epoch`` and one list per key, in the order of ``ops``).

    Writes a PNG to ``path`` atomically and returns the path.

    >>> import tempfile
    >>> entry = {"epoch": 0, "weight": [0.6, 0.4], "probability": [0.2, 0.7],
    ...          "magnitude": [0.5, 0.9]}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_policy_history([entry], ["hflip", "rotate"], f"{tmp}/h.png").name
    'h.png'
    """
    if len(history) == 0:
        raise ValueError("no epochs to plot: the history is empty")
    for i, entry in enumerate(history):
        for key in ("epoch", *POLICY_HISTORY_KEYS):
            if key not in entry:
                raise ValueError(f"history entry {i} has no {key!r} key (has "
                                 f"{sorted(map(str, entry))})")
        for key in POLICY_HISTORY_KEYS:
            if len(entry[key]) != len(ops):
                raise ValueError(f"history entry {i} has {len(entry[key])} {key} values for "
                                 f"{len(ops)} ops")
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 3.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, sharex=True)
    epochs = [entry["epoch"] + 1 for entry in history]
    colors = [colormaps["tab20"](i % 20) for i in range(len(ops))]
    titles = {"weight": "op weight (chance a slot draws it)",
              "probability": "application probability", "magnitude": "magnitude"}
    for ax, key in zip(axes, POLICY_HISTORY_KEYS):
        for i, name in enumerate(ops):
            ax.plot(epochs, [entry[key][i] for entry in history], color=colors[i],
                    linewidth=1.3, marker="." if len(epochs) < 3 else None, label=name)
        ax.set_title(titles[key], fontsize="medium")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    axes[1].set_ylim(0, 1)
    axes[2].set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize="small", frameon=False)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path


def _check_candidates(candidates: Sequence[Mapping[str, Any]]) -> None:
    if len(candidates) == 0:
        raise ValueError("no candidates to plot")
    for i, candidate in enumerate(candidates):
        _check_candidate(candidate, f"candidate {i}")


def _check_candidate(candidate: Mapping[str, Any], where: str) -> None:
    if not isinstance(candidate, Mapping):
        raise TypeError(f"{where} must be a dict with keys {list(CANDIDATE_KEYS)}, "
                        f"got {type(candidate).__name__}")
    for key in CANDIDATE_KEYS:
        if key not in candidate:
            raise ValueError(f"{where} has no {key!r} key (has {sorted(map(str, candidate))}; "
                             f"each needs {list(CANDIDATE_KEYS)})")
        value = candidate[key]
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"{where} has {key}={value!r}; it must be a finite number")


def _budget_macs(budget: Any) -> float | None:
    macs = getattr(budget, "macs", budget)
    if macs is None:
        return None
    if isinstance(macs, bool) or not isinstance(macs, Real) or not math.isfinite(macs):
        raise ValueError(f"budget must be a MAC count, an object with .macs, or None; "
                         f"got {budget!r}")
    return float(macs)


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _finish(fig, ax, path: str | os.PathLike) -> Path:
    """Grid, a legend below the axes (so it never hides a point), then an atomic PNG write."""
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.04, y=0.08)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles),
               fontsize="small", frameon=False)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return path

