"""The report of a search: ``report.md`` with the plots beside it (``pareto.png``,
``progress.png``) and what the search cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPORT_FILE = "report.md"
BUDGETS_FILE = "budgets.md"
PARETO_FILE = "pareto.png"
PROGRESS_FILE = "progress.png"


def write_report(directory: Path, arch, candidates: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``report.md`` (and, given candidates, its plots) for ``arch`` into ``directory``."""
    from .io import atomic_write
    from .plots import plot_pareto, plot_progress

    plots = []
    if candidates:
        chosen = next((c for c in candidates if c.get("sample") == arch.sample),
                      {"score": arch.score, "macs": arch.macs, "params": arch.params,
                       "seconds": 0.0})
        plot_pareto(candidates, chosen, directory / PARETO_FILE, budget=arch.budget.get("macs"))
        plot_progress(candidates, directory / PROGRESS_FILE)
        plots = [PARETO_FILE, PROGRESS_FILE]
    text = render_report(arch, len(candidates), plots)
    path = Path(directory) / REPORT_FILE
    atomic_write(path, lambda p: p.write_text(text))
    return path


def render_report(arch, evaluated: int = 0, plots: Sequence[str] = ()) -> str:
    """The markdown report of one architecture and the search that found it."""
    score = "-" if arch.score is None else f"{arch.score:.4f}"
    lines = [f"# Searched architecture: `{arch.space}`", "",
             "| | |", "|---|---|",
             f"| MACs (multiply-adds, fvcore's 'flops') | {arch.macs:,} |",
             f"| parameters | {arch.params:,} |",
             f"| held-out score ({arch.metric}) | {score} |"]
    if arch.precision is not None:
        lines[-1] = lines[-1][:-2] + f" (measured under precision {arch.precision}) |"
    if arch.costs_cover is not None:
        lines.append(f"| costs count | {arch.costs_cover} |")
    lines += [f"| budget | {_budget_text(arch.budget)} |",
             f"| input shape | {tuple(arch.input_shape)} |",
             f"| candidates evaluated | {evaluated} |"]
    if arch.note:
        lines.append(f"| note | {arch.note} |")
    lines += _cost_lines(arch.search_cost)
    lines += [""] + [f"![{name}]({name})" for name in plots]
    if arch.arch_string is not None:
        lines.append(f"| arch string | `{arch.arch_string}` |")
    lines += ["", "## Choices", "", "| label | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in arch.sample.items()]
    if arch.top:
        lines += ["", "## Best candidates", "", "| rank | score | MACs | params |",
                  "|---|---|---|---|"]
        lines += [f"| {i} | {c['score']:.4f} | {c['macs']:,} | {c['params']:,} |"
                  for i, c in enumerate(arch.top, 1)]
    return "\n".join(lines) + "\n"


def _cost_lines(cost: Mapping[str, Any]) -> list[str]:
    if not cost:
        return []
    lines = [f"| supernet training | {cost['train_seconds']:.1f} s |",
             f"| search (held-out evaluation of every candidate) | "
             f"{cost['search_seconds']:.1f} s |",
             f"| device-hours | {cost['device_hours']:.4f} ({cost['devices']} x "
             f"{cost['device']}) |"]
    if cost.get("energy_kwh") is not None:
        lines += [f"| energy | {cost['energy_kwh'] * 1000:.2f} Wh ({cost['method']}) |",
                  f"| CO2 | {cost['co2_kg'] * 1000:.2f} g (world-average grid intensity) |"]
    return lines


def _budget_text(budget: Mapping[str, Any]) -> str:
    limits = [f"{name} <= {value:,}" for name, value in budget.items() if value is not None]
    return ", ".join(limits) or "none"


def write_budget_table(directory: Path, results: Sequence[Any], budgets: Sequence[Any]) -> Path:
    """``budgets.md``, one row per budget of a search for several (``results`` in budget
    order, each exported to ``budget_<i>``), and ``pareto.png`` with every winner."""
    from .io import atomic_write
    from .plots import plot_pareto

    seen, candidates = set(), []
    for result in results:
        for candidate in result.candidates:
            key = repr(sorted(candidate.sample.items()))
            if key not in seen and candidate.score is not None:
                seen.add(key)
                candidates.append(candidate.to_json())
    chosen = [{**result.chosen.to_json(), "seconds": result.chosen.seconds or 0.0}
              for result in results]
    lines = ["# One supernet, one architecture per budget", "",
             "| budget | MACs | parameters | held-out score | export |", "|---|---|---|---|---|"]
    lines += [f"| {budget} | {r.chosen.macs:,} | {r.chosen.params:,} | {r.score:.4f} | "
              f"[budget_{i}](budget_{i}/report.md) |"
              for i, (budget, r) in enumerate(zip(budgets, results))]
    lines += ["", f"{len(candidates)} distinct sub-networks scored once on the held-out data "
              "and shared by every budget's search.", ""]
    if candidates:
        plot_pareto(candidates, chosen, Path(directory) / PARETO_FILE, budget=list(budgets))
        lines.append(f"![{PARETO_FILE}]({PARETO_FILE})")
    path = Path(directory) / BUDGETS_FILE
    atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n"))
    return path
