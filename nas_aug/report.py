"""The report of a search: ``report.md`` with the plots beside it (``pareto.png``,
``progress.png``) and what the search cost; and :func:`architecture_summary`, the table
``nas-aug show`` prints."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from torch import nn

from .constraints import count_params, get_counter
from .supernet import (
    canonical_sample,
    choice_modules,
    device_of,
    record_input_shapes,
    space_of,
)

REPORT_FILE = "report.md"
BUDGETS_FILE = "budgets.md"
PARETO_FILE = "pareto.png"
PROGRESS_FILE = "progress.png"
INACTIVE_NOTE = ("without effect in this architecture (in a block beyond its stage's depth, "
                 "or a candidate its layer choice did not pick; the value is whatever the "
                 "search held)")
ORIGINS = {"catalogue": "registered space", "timm": "elasticized timm model",
           "nni": "converted NNI space", "custom": "custom supernet"}


def inactive_labels(supernet: nn.Module, sample: Mapping[str, Any]) -> set[str]:
    """The labels of ``sample`` that have no effect on ``supernet`` under it: those of blocks
    an elastic depth leaves out and of candidates a layer choice did not pick.

    >>> from nas_aug.space import ElasticDepth, ValueChoice
    >>> from nas_aug.space.elastic import ElasticLinear
    >>> stage = ElasticDepth("depth", [ElasticLinear(4, 4, out_features_choice=ValueChoice(
    ...     f"b{i}.width", [2, 4])) for i in range(2)])
    >>> sorted(inactive_labels(stage, {"depth": 1, "b0.width": 4, "b1.width": 4}))
    ['b1.width']
    """
    space = space_of(supernet)
    canonical = canonical_sample(supernet, sample, space)
    # a label is inactive when changing it leaves the canonical sample (one per network) as is
    inactive = set()
    for label in space.labels:
        other = next((c for c in space.candidates(label) if c != canonical[label]), None)
        if other is not None and canonical_sample(supernet, {**canonical, label: other},
                                                  space) == canonical:
            inactive.add(label)
    return inactive


def write_report(directory: Path, arch, candidates: Sequence[Mapping[str, Any]],
                 supernet: nn.Module | None = None) -> Path:
    """Write ``report.md`` (and, given candidates, its plots) for ``arch`` into ``directory``;
    ``supernet`` (the one searched) marks the labels without effect."""
    from .io import atomic_write
    from .plots import plot_pareto, plot_progress

    inactive = None if supernet is None else inactive_labels(supernet, arch.sample)
    plots = []
    if candidates:
        chosen = chosen_candidate(arch, candidates, inactive or ())
        label = "chosen (most probable)" if _by_probability(arch) else "chosen"
        plot_pareto(candidates, [] if chosen is None else chosen, directory / PARETO_FILE,
                    budget=arch.budget.get("macs"), chosen_label=label)
        plot_progress(candidates, directory / PROGRESS_FILE)
        plots = [PARETO_FILE, PROGRESS_FILE]
    text = render_report(arch, len(candidates), plots, inactive)
    path = Path(directory) / REPORT_FILE
    atomic_write(path, lambda p: p.write_text(text))
    return path


def chosen_candidate(arch, candidates: Sequence[Mapping[str, Any]],
                     inactive: Collection[str] = ()) -> Mapping[str, Any] | None:
    """The candidate that is ``arch``'s network (the same values on every label but the
    ``inactive`` ones), else ``arch``'s own point where it has a score, else ``None``.

    >>> from types import SimpleNamespace
    >>> arch = SimpleNamespace(sample={"d": 1, "k": 5}, score=0.5, macs=10, params=2)
    >>> chosen_candidate(arch, [{"sample": {"d": 1, "k": 3}, "score": 0.7}], {"k"})["score"]
    0.7
    >>> chosen_candidate(arch, [{"sample": {"d": 2, "k": 3}, "score": 0.7}])["seconds"]
    0.0
    """
    def active(sample: Mapping[str, Any]) -> dict[str, Any]:
        return {label: value for label, value in sample.items() if label not in inactive}

    match = next((c for c in candidates if active(c.get("sample", {})) == active(arch.sample)),
                 None)
    if match is None and arch.score is not None:
        match = {"score": arch.score, "macs": arch.macs, "params": arch.params, "seconds": 0.0}
    return match


def _by_probability(arch) -> bool:
    """Whether ``arch``'s candidates are ranked by probability (a gradient strategy's)."""
    return any(c.get("probability") is not None for c in arch.top)


def supernet_name(arch, quote: str = "") -> str:
    """What ``arch`` was searched in: its registered space, else its supernet's class and
    origin (names between ``quote`` marks).

    >>> from nas_aug import Architecture
    >>> supernet_name(Architecture(None, {}, {}, (4,), origin="nni", model_class="Net"))
    'Net (converted NNI space)'
    """
    if arch.space is not None:
        return f"{quote}{arch.space}{quote}"
    origin = ORIGINS.get(arch.origin, arch.origin)
    return f"{quote}{arch.model_class}{quote} ({origin})" if arch.model_class else f"a {origin}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_report(arch, evaluated: int = 0, plots: Sequence[str] = (),
                  inactive: set[str] | None = None) -> str:
    """The markdown report of one architecture and the search that found it; ``inactive``
    labels are marked as such (``None``: not known)."""
    lines = [f"# Searched architecture: {supernet_name(arch, '`')}", "",
             "| | |", "|---|---|",
             f"| MACs (multiply-adds, fvcore's 'flops') | {arch.macs:,} |",
             f"| parameters | {arch.params:,} |",
             f"| held-out score ({arch.metric}) | {_score(arch.score)} |"]
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
    lines += ["", "## Choices", ""] + _choice_lines(arch.sample, inactive)
    if arch.top:
        lines += ["", "## Best candidates", ""] + _top_lines(arch, inactive or set())
    return "\n".join(lines) + "\n"


def _choice_lines(sample: Mapping[str, Any], inactive: set[str] | None) -> list[str]:
    if inactive is None:
        return ["| label | value |", "|---|---|"] + [f"| {label} | {value} |"
                                                    for label, value in sample.items()]
    lines = ["| label | value | |", "|---|---|---|"]
    lines += [f"| {label} | {value} | {'inactive' if label in inactive else ''} |"
              for label, value in sample.items()]
    if inactive:
        lines += ["", f"{len(inactive)} of {len(sample)} labels are inactive: {INACTIVE_NOTE}."]
    return lines


def _top_lines(arch, inactive: set[str]) -> list[str]:
    chosen = chosen_candidate(arch, arch.top, inactive)
    if _by_probability(arch):
        lines = ["Ranked by probability under the architecture distribution the search "
                 "learned; the chosen one is the most probable within the budget, and the "
                 "held-out scores are for the record.", "",
                 "| rank | probability | held-out score | MACs | params |",
                 "|---|---|---|---|---|"]
        cells = [f"{_number(c.get('probability'))} | {_score(c['score'])}" for c in arch.top]
    else:
        lines = ["Ranked by held-out score (equal scores: fewer MACs first).", "",
                 "| rank | held-out score | MACs | params |", "|---|---|---|---|"]
        cells = [_score(c["score"]) for c in arch.top]
    lines += [f"| {i}{' (chosen)' if c is chosen else ''} | {cell} | {c['macs']:,} | "
              f"{c['params']:,} |" for i, (c, cell) in enumerate(zip(arch.top, cells), 1)]
    return lines


def architecture_summary(subnet: nn.Module, sample: Mapping[str, Any],
                         input_shape: Sequence[int], supernet: nn.Module | None = None,
                         counter: str = "fvcore") -> str:
    """The searched architecture as a table, as Lightning's ``ModelSummary`` prints a model:
    one row per stage of the standalone ``subnet`` (its top-level modules; a top-level
    container whose own modules hold the choices of several of them, such as a Sequential of
    stages, by those modules) with its MACs (``counter``, for one input of ``input_shape``)
    and parameters, and the stage's choices by block (a label's prefix). ``supernet`` (the
    searched one) places each label in the stages whose choice modules read it and marks the
    inactive ones; without it, a label goes to the stage of the module its prefix names (as
    an elasticized timm model's labels do) and activity is not known.

    >>> from collections import OrderedDict
    >>> from nas_aug.space import ElasticDepth, ValueChoice
    >>> from nas_aug.space.elastic import ElasticLinear
    >>> from nas_aug.supernet import extract_subnet
    >>> supernet = nn.Sequential(OrderedDict(stem=nn.Linear(4, 8), stage=ElasticDepth(
    ...     "depth", [ElasticLinear(8, 8, out_features_choice=ValueChoice(f"b{i}.width", [4, 8]))
    ...               for i in range(2)])))
    >>> sample = {"depth": 1, "b0.width": 8, "b1.width": 4}
    >>> subnet = extract_subnet(supernet, sample, torch.zeros(1, 4))
    >>> print(architecture_summary(subnet, sample, (4,), supernet, counter="torch"))
    ... # doctest: +NORMALIZE_WHITESPACE
      | Stage | Block | Choices            | MACs | Params
    ------------------------------------------------------
    0 | stem  |       |                    | 32   | 40
    1 | stage |       | depth=1            | 64   | 72
      |       | b0    | width=8            |      |
      |       | b1    | width=4 (inactive) |      |
    ------------------------------------------------------
    96     MACs (multiply-adds, one input of shape (4,))
    112    Params
    (inactive): without effect in this architecture (in a block beyond its stage's depth, or a
    candidate its layer choice did not pick; the value is whatever the search held)
    """
    count = get_counter(counter)
    if supernet is not None:
        owners: dict[str, list[str]] = {label: [] for label in sample}
        for name, module in choice_modules(supernet):
            for choice in module.choices():
                owners[choice.label].append(name)
        inactive = inactive_labels(supernet, sample)
    else:
        owners = {label: [label.rpartition(".")[0]] for label in sample}
        inactive = set()
    stages = _stages(subnet, [path for paths in owners.values() for path in paths])
    placed: dict[str, list[str]] = {name: [] for name, _ in stages}
    unplaced = []
    for label, paths in owners.items():
        names = [name for name, _ in stages if any(_inside(path, name) for path in paths)]
        for name in names:
            placed[name].append(label)
        if not names:
            unplaced.append(label)
    example = torch.zeros(1, *input_shape, device=device_of(subnet))
    shapes = record_input_shapes(subnet, example)
    rows, stage_macs = [], 0
    for index, (name, module) in enumerate(stages):
        shape = shapes.get(module)
        macs = None if shape is None else count(module, torch.zeros(shape, device=example.device))
        stage_macs += macs or 0
        cells = [str(index), name or "(the model)"]
        rows += _block_rows(cells, placed[name], sample, inactive,
                            ["-" if macs is None else _human(macs),
                             _human(count_params(module))])
    if unplaced:
        rows += _block_rows(["", "(no stage)"], unplaced, sample, inactive, ["", ""])
    total = count(subnet, example)
    header = ["", "Stage", "Block", "Choices", "MACs", "Params"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    rule = "-" * len(line(header))
    lines = [line(header), rule, *map(line, rows), rule,
             f"{_human(total):<6} MACs (multiply-adds, one input of shape {tuple(input_shape)})",
             f"{_human(count_params(subnet)):<6} Params"]
    if total != stage_macs:
        lines.append(f"{_human(total - stage_macs):<6} of the MACs are outside the stages (in "
                     "the model's own forward)")
    if inactive:
        lines.append(f"(inactive): {INACTIVE_NOTE}")
    return "\n".join(lines)


def _inside(path: str, stage: str) -> bool:
    return not stage or path == stage or path.startswith(f"{stage}.")


def _stages(subnet: nn.Module, owners: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The stages of ``subnet``: its top-level modules, each listed by its own modules where
    choice modules (at the paths ``owners``) sit in several of them."""
    children = list(subnet.named_children())
    if not children:
        return [("", subnet)]
    stages = []
    for name, child in children:
        inner = {path.split(".")[1] for path in owners if path.startswith(f"{name}.")}
        if len(inner) > 1:
            stages += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            stages.append((name, child))
    return stages


def _block_rows(cells: list[str], labels: Sequence[str], sample: Mapping[str, Any],
                inactive: Collection[str], costs: list[str]) -> list[list[str]]:
    """A stage's rows: its first cells and costs, then one row per block (the labels of one
    prefix, active and inactive ones apart; a label without a prefix alone)."""
    blocks: dict[tuple[str, str, bool], list[str]] = {}
    for label in labels:
        block, _, leaf = label.rpartition(".")
        key = (block, "" if block else label, label in inactive)
        blocks.setdefault(key, []).append(f"{leaf}={sample[label]}")
    groups = [[block, ", ".join(values) + (" (inactive)" if off else "")]
              for (block, _, off), values in blocks.items()] or [["", ""]]
    first, *rest = groups
    return [cells + first + costs] + [["", "", *group, "", ""] for group in rest]


def _human(number: int) -> str:
    """A count as Lightning's ``ModelSummary`` prints one: ``950``, ``1.2 K``, ``34.5 M``."""
    return get_human_readable_count(number).strip()


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
