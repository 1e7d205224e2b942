"""Exact per-sample costs from a per-choice table, built once per supernet.

Counting a whole sub-network (fvcore traces it) takes too long to do for every candidate of a
search. The table splits the supernet into *units*: modules whose cost depends on a few labels,
their own and those that set their input shape (the width of the layer before, in NNI-style
spaces where every layer reads the previous one's width). Each unit is extracted and counted
once per combination of its labels; a sample's cost is then a sum of look-ups, gated by the
elastic depths and layer choices that decide whether a unit runs at all. The same tables
give the exact expected cost when each label is drawn from a probability vector, as a
differentiable function of the probabilities (a penalty for gradient-based search).
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..space import ElasticDepth, LayerChoice, Space, sample_key
from ..space.mixing import check_weights
from ..supernet import activate, device_of, extract_subnet, record_input_shapes, space_of
from ..validation import check_int
from .budget import Budget, Cost
from .counters import FvcoreCounter, MacCounter, count_params
from .latency import forward_ms

# (label, operator, value): a unit runs only if sample[label] >= value or == value
Gate = tuple[str, str, Any]


@dataclass
class Unit:
    name: str
    labels: tuple[str, ...]
    gates: tuple[Gate, ...]
    costs: dict[tuple, Cost]
    input_shapes: dict[tuple, tuple[int, ...]]  # per combination of ``labels``
    own: tuple[str, ...] = ()  # the labels the module reads (the rest set its input shape)
    latency_ms: dict[tuple, float] | None = None  # per combination, once measured

    def runs(self, sample: Mapping[str, Any]) -> bool:
        return all(sample[label] >= value if op == ">=" else sample[label] == value
                   for label, op, value in self.gates)


def _probe_samples(space: Space, extra: int, seed: int) -> list[dict]:
    """Samples that between them take every candidate of every label, plus a few random."""
    width = max((len(space.candidates(label)) for label in space.labels), default=1)
    probes = [{label: space.candidates(label)[min(i, len(space.candidates(label)) - 1)]
               for label in space.labels} for i in range(width)]
    rng = random.Random(seed)
    return probes + [space.random(rng) for _ in range(extra)]


class _ShapesUnder:
    """The input shape of every module of ``model`` under a sample (one forward per sample)."""

    def __init__(self, model: nn.Module, space: Space, example: torch.Tensor):
        self.model, self.space, self.example = model, space, example
        self._cache: dict[str, dict[nn.Module, tuple[int, ...]]] = {}

    def __call__(self, sample: Mapping[str, Any]) -> dict[nn.Module, tuple[int, ...]]:
        key = sample_key(sample)
        if key not in self._cache:
            activate(self.model, sample, self.space)
            self._cache[key] = record_input_shapes(self.model, self.example)
        return self._cache[key]

    def labels_setting(self, module: nn.Module, base: Mapping[str, Any]
                       ) -> tuple[str, ...] | None:
        """The labels whose value changes ``module``'s input shape, one label of ``base``
        changed at a time (``None`` if ``module`` does not run under ``base``)."""
        reference = self(base).get(module)
        if reference is None:
            return None
        return tuple(label for label in self.space.labels if any(
            self({**base, label: value}).get(module, reference) != reference
            for value in self.space.candidates(label) if value != base[label]))


class CostTable:
    """MACs and parameters of any sample, exactly as ``counter`` counts the extracted
    sub-network, from per-unit tables (see module docstring).

    >>> from nas_aug.search_spaces import create_space
    >>> net = create_space("mobilenet_tiny", in_chans=1, img_size=8, expand_ratios=(3, 6))
    >>> table = CostTable.build(net, (1, 8, 8))
    >>> table(table.space.smallest()).macs < table(table.space.largest()).macs
    True
    """

    def __init__(self, space: Space, units: list[Unit], input_shape: tuple[int, ...],
                 counter_name: str):
        self.space = space
        self.units = units
        self.input_shape = tuple(input_shape)
        self.counter_name = counter_name
        self._grids: dict[torch.device, list[tuple[tuple[str, ...], torch.Tensor]]] = {}
        self.latency_device: str | None = None  # where measure_latency timed the units
        self.latency_check: list[dict[str, Any]] = []

    @property
    def has_latency(self) -> bool:
        return self.latency_device is not None

    def __call__(self, sample: Mapping[str, Any]) -> Cost:
        macs = params = 0
        latency = 0.0 if self.has_latency else None
        for unit in self.units:
            if unit.runs(sample):
                key = tuple(sample[label] for label in unit.labels)
                if latency is not None:
                    latency += unit.latency_ms[key]
                cost = unit.costs[key]
                macs, params = macs + cost.macs, params + cost.params
        return Cost(macs, params, latency)

    def largest_within(self, budget: Budget) -> dict[str, Any] | None:
        """The sample with the most parameters (then MACs) that ``budget`` allows, "the
        largest network that fits": the rule of thumb a search has to beat. Found by hill
        climbing over the table from the largest sample, one label changed at a time: down
        while the budget refuses it (each step the largest of the changes that bring it nearer
        the budget), then up while a larger one still fits (the largest). A local optimum;
        ``None`` where the descent gets stuck above the budget.

        >>> from nas_aug.constraints import Budget
        >>> from nas_aug.search_spaces import create_space
        >>> net = create_space("mobilenet_tiny", in_chans=1, img_size=8)
        >>> table = CostTable.build(net, (1, 8, 8))
        >>> largest = table(table.space.largest())
        >>> found = table(table.largest_within(Budget(macs=largest.macs // 2)))
        >>> found.macs <= largest.macs // 2, found.params > 0.8 * largest.params
        (True, True)
        """
        space = self.space

        def size(cost: Cost) -> tuple[int, int]:  # what "larger" means
            return cost.params, cost.macs

        def neighbours(sample: dict[str, Any]) -> list[tuple[dict[str, Any], Cost]]:
            changed = [{**sample, label: value} for label in space.labels
                       for value in space.candidates(label) if value != sample[label]]
            return [(other, self(other)) for other in changed]

        current = space.largest()
        cost = self(current)
        while (excess := budget.excess(cost)) > 1:
            nearer = [(s, c) for s, c in neighbours(current) if budget.excess(c) < excess]
            if not nearer:
                return None
            current, cost = max(nearer, key=lambda pair: size(pair[1]))
        while bigger := [(s, c) for s, c in neighbours(current)
                         if size(c) > size(cost) and budget.allows(c)]:
            current, cost = max(bigger, key=lambda pair: size(pair[1]))
        return current

    def expected(self, probabilities: Mapping[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected MACs and parameters, as float64 scalars differentiable in the
        probabilities, when each label is drawn independently from its probability vector
        (``{label: 1-D tensor over its candidates}``, every label). Exact where each vector
        sums to 1 (not checked): a unit's cost is weighted by the labels it depends on only.

        >>> from nas_aug.space import ElasticConv2d, ValueChoice
        >>> from nas_aug.constraints import TorchCounter
        >>> conv = ElasticConv2d(1, 4, 1, out_channels_choice=ValueChoice("w", [2, 4]))
        >>> table = CostTable.build(conv, (1, 3, 3), counter=TorchCounter())
        >>> table({"w": 2}), table({"w": 4})
        (Cost(macs=18, params=2, latency_ms=None), Cost(macs=36, params=4, latency_ms=None))
        >>> macs, params = table.expected({"w": torch.tensor([0.5, 0.5])})
        >>> macs.item(), params.item()
        (27.0, 3.0)
        """
        total = self._expected_totals(probabilities)
        return total[0], total[1]

    def expected_latency(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Expected latency (ms) as :meth:`expected` computes MACs; needs
        :meth:`measure_latency` first."""
        if not self.has_latency:
            raise ValueError("this cost table has no latency yet: call measure_latency(model) "
                             "on the device the latency is for")
        return self._expected_totals(probabilities)[2]

    def _expected_totals(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        probabilities = check_weights(self.space, probabilities, complete=True)
        device = next(iter(probabilities.values()), torch.zeros(0)).device
        total = torch.zeros(3, dtype=torch.float64, device=device)
        for labels, grid in self._cost_grids(device):
            for label in reversed(labels):  # contract the last label's axis each time
                grid = grid @ probabilities[label].to(torch.float64)
            total = total + grid
        return total

    def _cost_grids(self, device: torch.device) -> list[tuple[tuple[str, ...], torch.Tensor]]:
        """Per set of labels, the summed (MACs, params, latency) of the units that depend on
        exactly those labels (their own and their gates'), zero where a gate stops a unit (and
        latency zero until measured): a grid of shape ``(3, n_1, ..., n_k)`` over the labels'
        candidates."""
        if device not in self._grids:
            order = {label: i for i, label in enumerate(self.space.labels)}
            grids: dict[tuple[str, ...], torch.Tensor] = {}
            for unit in self.units:
                labels = tuple(sorted({*unit.labels, *(label for label, _, _ in unit.gates)},
                                      key=order.__getitem__))
                candidates = [self.space.candidates(label) for label in labels]
                grid = grids.setdefault(labels, torch.zeros(3, *map(len, candidates),
                                                            dtype=torch.float64))
                for index in itertools.product(*(range(len(c)) for c in candidates)):
                    sample = {label: c[i] for label, c, i in zip(labels, candidates, index)}
                    if unit.runs(sample):
                        key = tuple(sample[label] for label in unit.labels)
                        cost = unit.costs[key]
                        latency = unit.latency_ms[key] if unit.latency_ms else 0.0
                        grid[(slice(None), *index)] += torch.tensor(
                            [cost.macs, cost.params, latency], dtype=torch.float64)
            self._grids[device] = [(labels, grid.to(device)) for labels, grid in grids.items()]
        return self._grids[device]

    @classmethod
    def build(cls, model: nn.Module, input_shape: tuple[int, ...],
              counter: MacCounter | None = None, max_combinations: int = 64,
              progress: bool = False, check: bool = True) -> CostTable:
        """Tabulate ``model`` for inputs of shape ``input_shape`` (without the batch dim).

        With ``check``, the table is compared with a full count of the largest, the smallest and
        four random sub-networks, and a mismatch (cost hidden outside the units, or a unit whose
        input shape changes only under some mix of choices) raises ``RuntimeError``.
        """
        counter = counter or FvcoreCounter()
        model = copy.deepcopy(model).eval()
        space = space_of(model)
        example = torch.zeros(1, *input_shape, device=device_of(model))
        shapes: dict[nn.Module, set] = {}
        for sample in _probe_samples(space, extra=2, seed=0):
            activate(model, sample, space)
            for module, shape in record_input_shapes(model, example).items():
                shapes.setdefault(module, set()).add(shape)

        under = _ShapesUnder(model, space, example)
        plan: list[tuple[str, nn.Module, tuple[str, ...], tuple[str, ...], dict]] = []

        def combinations(labels: tuple[str, ...]) -> int:
            return math.prod(len(space.candidates(label)) for label in labels)

        def base_of(gates: tuple[Gate, ...]) -> dict[str, Any]:
            """The largest sample, with the layer choices that ``gates`` pass through."""
            return {**space.largest(), **{label: v for label, op, v in gates if op == "=="}}

        def visit(name: str, module: nn.Module, gates: tuple[Gate, ...]) -> None:
            seen = shapes.get(module, set())
            if gates and module in under(base_of(gates)):  # a gated module: run it at least once
                seen = seen | {under(base_of(gates))[module]}
            if not seen:  # a container that is never called itself (an nn.ModuleList its
                # parent loops over) may hold modules that run; else it costs nothing
                for child_name, child in module.named_children():
                    visit(f"{name}.{child_name}" if name else child_name, child, gates)
                return
            labels = space_of(module).labels
            if isinstance(module, ElasticDepth):
                for i, block in enumerate(module.blocks):
                    visit(f"{name}.blocks.{i}", block,
                          gates + ((module.choice.label, ">=", i + 1),))
            elif isinstance(module, LayerChoice):
                for key in module.choice.candidates:
                    visit(f"{name}.candidates.{key}", module.candidate(key),
                          gates + ((module.choice.label, "==", key),))
            elif len(seen) == 1 and combinations(labels) <= max_combinations:
                plan.append((name, module, labels, gates, {"shape": next(iter(seen))}))
            elif next(module.children(), None) is not None:
                for child_name, child in module.named_children():
                    visit(f"{name}.{child_name}" if name else child_name, child, gates)
            elif not labels and all(counter(module, torch.zeros(s, device=example.device)) == 0
                                    for s in seen):
                return  # a free leaf (an activation, say) between elastic layers
            else:  # a layer whose input shape is set by labels outside it
                base = base_of(gates)
                outside = under.labels_setting(module, base)
                outside = None if outside is None else tuple(x for x in outside if x not in labels)
                if outside is None or combinations(labels + outside) > max_combinations:
                    raise RuntimeError(
                        f"cannot tabulate the cost of {name or 'the model'} "
                        f"({type(module).__name__}): its input shape varies ({sorted(seen)}) "
                        f"with labels {outside} and its own {list(labels)}: more than "
                        f"max_combinations={max_combinations} combinations")
                plan.append((name, module, labels, gates, {"outside": outside, "base": base}))

        visit("", model, ())
        total = sum(combinations(labels + extra.get("outside", ()))
                    for _, _, labels, _, extra in plan)
        units = []
        with tqdm(total=total, desc="cost table", disable=not progress, leave=False) as bar:
            for name, module, own, gates, extra in plan:
                outside = extra.get("outside", ())
                labels = own + outside
                costs, input_shapes = {}, {}
                for values in itertools.product(*(space.candidates(label) for label in labels)):
                    combo = dict(zip(labels, values))
                    if outside:
                        shape = under({**extra["base"], **{k: combo[k] for k in outside}})[module]
                    else:
                        shape = extra["shape"]
                    unit_input = torch.zeros(shape, device=example.device)
                    unit = extract_subnet(module, {k: combo[k] for k in own}, unit_input)
                    costs[values] = Cost(counter(unit, unit_input), count_params(unit))
                    input_shapes[values] = tuple(shape)
                    bar.update()
                units.append(Unit(name, labels, gates, costs, input_shapes, own))
        table = cls(space, units, input_shape, counter.name)
        if check:  # the probes' extremes, and random samples that mix candidates differently
            rng = random.Random(1)
            for sample in [space.largest(), space.smallest()] + [space.random(rng)
                                                                 for _ in range(4)]:
                subnet = extract_subnet(model, sample, example)
                full = Cost(counter(subnet, example), count_params(subnet))
                if full != table(sample):  # no latency yet: MACs and parameters
                    raise RuntimeError(
                        f"cost table gives {table(sample)} but counting the whole sub-network "
                        f"gives {full}: some cost sits outside the tabulated modules (an "
                        "operation in a parent's forward?)")
        return table

    def measure_latency(self, model: nn.Module, device: torch.device | str | None = None,
                        batch_size: int = 1, warmup: int = 3, repeats: int = 10,
                        measure: Callable[[nn.Module, torch.Tensor], float] | None = None,
                        progress: bool = False) -> None:
        """Time every unit once per combination of its labels on ``device`` (the model's by
        default) for a batch of ``batch_size``: a sample's latency is then the sum over the
        units it runs, and :meth:`expected_latency` is exact under the same sum. ``measure``
        (``forward_ms`` by default) times one module on one input.

        A sum of per-unit times is the lookup-table model of ProxylessNAS and FBNet; it misses
        what happens between units, so the largest and smallest sub-networks are also timed
        whole and both figures kept in ``latency_check``.
        """
        check_int("batch_size", batch_size, 1)
        device = torch.device(device) if device is not None else device_of(model)
        measure = measure or (lambda module, x: forward_ms(module, x, warmup, repeats))
        model = copy.deepcopy(model).eval().to(device)
        total = sum(len(unit.costs) for unit in self.units)
        with tqdm(total=total, desc="latency table", disable=not progress, leave=False) as bar:
            for unit in self.units:
                module = model.get_submodule(unit.name)
                unit.latency_ms = {}
                for values in unit.costs:
                    x = torch.zeros(batch_size, *unit.input_shapes[values][1:], device=device)
                    own = {k: v for k, v in zip(unit.labels, values) if k in unit.own}
                    subnet = extract_subnet(module, own, x)
                    unit.latency_ms[values] = float(measure(subnet.to(device), x))
                    bar.update()
        self.latency_device = str(device)
        self._grids.clear()
        example = torch.zeros(batch_size, *self.input_shape, device=device)
        self.latency_check = []
        for kind, sample in (("largest", self.space.largest()),
                             ("smallest", self.space.smallest())):
            subnet = extract_subnet(model, sample, example).to(device)
            self.latency_check.append({"sample": kind, "table_ms": self(sample).latency_ms,
                                       "measured_ms": float(measure(subnet, example))})
