import random
from collections import Counter

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas_aug.constraints import (
    Budget,
    Cost,
    CostTable,
    FvcoreCounter,
    TorchCounter,
    count_params,
    get_counter,
)
from nas_aug.search_spaces import create_space
from nas_aug.space import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticDepth,
    ElasticLinear,
    LayerChoice,
    ValueChoice,
)
from nas_aug.supernet import extract_subnet, space_of

# Budget ---------------------------------------------------------------------------------------

def test_flops_is_another_name_for_macs():
    assert Budget(flops=2e6) == Budget(macs=2_000_000)
    assert Budget(flops=2e6).macs == 2_000_000
    assert Budget(macs=5, flops=5.0).macs == 5
    assert Budget(params=10).macs is None and Budget(params=10).latency_ms is None


def test_a_budget_without_any_limit_points_to_none():
    with pytest.raises(ValueError, match=r"Budget\(\) sets no limit.*pass budget=None"):
        Budget()
    with pytest.raises(ValueError, match="sets no limit"):
        Budget(macs=None, params=None)


def test_different_macs_and_flops_is_an_error():
    with pytest.raises(ValueError, match="macs=100 and flops=200"):
        Budget(macs=100, flops=200)


@pytest.mark.parametrize("kwargs, bad", [
    ({"macs": 0}, "macs=0"),
    ({"flops": -5}, "flops=-5"),
    ({"params": -1.5}, "params=-1.5"),
    ({"params": "1M"}, "params='1M'"),
    ({"macs": True}, "macs=True"),
])
def test_non_positive_or_non_numeric_budget_is_an_error(kwargs, bad):
    with pytest.raises(ValueError, match="must be a finite number >= 1") as err:
        Budget(**kwargs)
    assert bad in str(err.value)


def test_budget_allows():
    budget = Budget(macs=1000, params=50)
    assert budget.allows(Cost(macs=1000, params=50))
    assert budget.allows(Cost(macs=1, params=1))
    assert not budget.allows(Cost(macs=1001, params=50))
    assert not budget.allows(Cost(macs=1000, params=51))
    assert Budget(params=10).allows(Cost(macs=10**12, params=10))
    assert not Budget(macs=10).allows(Cost(macs=11, params=0))


def test_budget_excess_is_the_worst_ratio_to_a_limit():
    assert Budget(macs=1000, params=100).excess(Cost(macs=500, params=150)) == 1.5
    assert Budget(params=100).excess(Cost(macs=10**9, params=50)) == 0.5
    assert Budget(latency_ms=2.0).excess(Cost(macs=1, params=1, latency_ms=3.0)) == 1.5
    with pytest.raises(ValueError, match="no latency measured|has none measured"):
        Budget(latency_ms=2.0).excess(Cost(macs=1, params=1))


def test_get_counter():
    assert isinstance(get_counter("fvcore"), FvcoreCounter)
    assert isinstance(get_counter("torch"), TorchCounter)
    with pytest.raises(ValueError, match=r"'ptflops'.*\['fvcore', 'torch'\]"):
        get_counter("ptflops")


# the cost table against fvcore on the extracted sub-network ----------------------------------

def full_count(net: nn.Module, sample, input_shape) -> Cost:
    example = torch.zeros(1, *input_shape)
    subnet = extract_subnet(net, sample, example)
    return Cost(FvcoreCounter()(subnet, example), count_params(subnet))


@pytest.fixture(scope="module")
def tiny8():
    torch.manual_seed(0)
    net = create_space("mobilenet_tiny", num_classes=10, in_chans=1, img_size=8)
    return net, CostTable.build(net, (1, 8, 8))


def test_table_equals_fvcore_on_random_subnets_8px(tiny8):
    net, table = tiny8
    space = space_of(net)
    assert table.space.labels == space.labels
    assert table.counter_name == "fvcore" and table.input_shape == (1, 8, 8)
    rng = random.Random(0)
    samples = [space.smallest(), space.largest()] + [space.random(rng) for _ in range(28)]
    costs = []
    for sample in samples:
        expected = full_count(net, sample, (1, 8, 8))
        assert table(sample) == expected, sample
        costs.append(expected)
    assert len({c.macs for c in costs}) > 20  # the samples really differ


def test_table_equals_fvcore_on_random_subnets_32px_rgb():
    torch.manual_seed(0)
    net = create_space("mobilenet_tiny", num_classes=10, in_chans=3, img_size=32)
    table = CostTable.build(net, (3, 32, 32))
    space = space_of(net)
    rng = random.Random(1)
    for sample in [space.random(rng) for _ in range(6)]:
        assert table(sample) == full_count(net, sample, (3, 32, 32)), sample
    # a larger image costs more MACs for the same parameters
    sample = space.largest()
    small = full_count(net, sample, (3, 8, 8))
    assert table(sample).macs > small.macs and table(sample).params == small.params


def test_smallest_and_largest_bound_random_costs(tiny8):
    net, table = tiny8
    space = table.space
    rng = random.Random(7)
    low, high = table(space.smallest()), table(space.largest())
    for sample in (space.random(rng) for _ in range(200)):
        cost = table(sample)
        assert low.macs <= cost.macs <= high.macs
        assert low.params <= cost.params <= high.params
    assert low.macs < high.macs and low.params < high.params


def larger_neighbours(table, sample, budget):
    """The samples one label away from ``sample`` that are larger and fit ``budget``."""
    size = (table(sample).params, table(sample).macs)
    return [neighbour for label in table.space.labels
            for value in table.space.candidates(label)
            if (neighbour := {**sample, label: value}) != sample
            and (table(neighbour).params, table(neighbour).macs) > size
            and budget.allows(table(neighbour))]


@pytest.mark.parametrize("share", [0.3, 0.5, 0.8])
def test_largest_within_a_budget_fits_and_no_single_change_enlarges_it(tiny8, share):
    _, table = tiny8
    space, largest = table.space, table(table.space.largest())
    budget = Budget(macs=int(share * largest.macs))
    found = table.largest_within(budget)
    assert budget.allows(table(found))
    assert larger_neighbours(table, found, budget) == []  # a local optimum of (params, MACs)
    rng = random.Random(0)
    fitting = [c for c in (table(space.random(rng)) for _ in range(300)) if budget.allows(c)]
    assert fitting and table(found).params >= max(c.params for c in fitting)


def test_largest_within_a_params_budget_and_an_impossible_one(tiny8):
    _, table = tiny8
    space = table.space
    budget = Budget(params=table(space.largest()).params // 2)
    found = table(table.largest_within(budget))
    assert budget.params * 0.9 < found.params <= budget.params
    assert table.largest_within(Budget(macs=table(space.smallest()).macs - 1)) is None
    assert table.largest_within(Budget(macs=10**12)) == space.largest()


def no_count(inputs, outputs) -> Counter:
    return Counter()


def conv_linear_only(model: nn.Module, example: torch.Tensor) -> FlopCountAnalysis:
    """fvcore restricted to conv and linear: every other operator it reports is disabled.

    (``set_op_handle(name, None)`` does not disable an operator that has a default handle in
    the installed fvcore: it only adds the name to the ignored set, and the default handle
    still counts. A handle that counts nothing does disable it.)
    """
    reported = FlopCountAnalysis(model, example).unsupported_ops_warnings(False).by_operator()
    analysis = FlopCountAnalysis(model, example).unsupported_ops_warnings(False)
    for op in set(reported) - {"conv", "linear"}:
        analysis.set_op_handle(f"aten::{op}", no_count)
    return analysis


def test_counters_agree_on_conv_and_linear(tiny8):
    net, _ = tiny8
    space = space_of(net)
    rng = random.Random(3)
    example = torch.zeros(1, 1, 8, 8)
    for sample in [space.largest()] + [space.random(rng) for _ in range(2)]:
        subnet = extract_subnet(net, sample, example).eval()
        full = FlopCountAnalysis(subnet, example).unsupported_ops_warnings(False)
        assert set(full.by_operator()) == {"conv", "batch_norm", "linear", "adaptive_avg_pool2d"}
        restricted = conv_linear_only(subnet, example)
        assert set(restricted.by_operator()) == {"conv", "linear"}
        with torch.no_grad(), FlopCounterMode(display=False) as mode:
            subnet(example)
        assert 2 * restricted.total() == mode.get_total_flops()
        assert TorchCounter()(subnet, example) == restricted.total()
        # fvcore's full count adds batch norm and pooling on top
        assert FvcoreCounter()(subnet, example) == full.total() > restricted.total()


def test_counters_leave_the_module_mode_alone():
    fc = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)).train()
    assert TorchCounter()(fc, torch.zeros(1, 8)) == 32
    assert FvcoreCounter()(fc, torch.zeros(1, 8)) > 32  # + batch norm, which runs in eval
    assert fc.training and fc[1].num_batches_tracked.item() == 0


# where a table cannot be built -----------------------------------------------------------------

class MatmulOutside(nn.Module):
    """Two elastic layers whose outputs meet in a matmul in this module's own forward: the
    matmul's cost depends on both widths (81 combinations, more than one unit may hold)."""

    def __init__(self):
        super().__init__()
        widths = list(range(8, 17))
        self.left = ElasticLinear(4, 16, out_features_choice=ValueChoice("left", widths))
        self.right = ElasticLinear(4, 16, out_features_choice=ValueChoice("right", widths))

    def forward(self, x):
        return torch.matmul(self.left(x).T, self.right(x))


def test_cost_outside_the_units_is_detected():
    with pytest.raises(RuntimeError) as err:
        CostTable.build(MatmulOutside(), (4,))
    message = str(err.value)
    assert "outside the tabulated modules" in message
    assert "counting the whole sub-network" in message
    # with room for every combination the parent is one unit, and the table is exact
    table = CostTable.build(MatmulOutside(), (4,), max_combinations=81)
    # two linears on a batch of one, then (9 x 1) @ (1 x 12)
    assert table({"left": 9, "right": 12}) == Cost(macs=4 * 9 + 4 * 12 + 9 * 12,
                                                    params=(4 + 1) * 9 + (4 + 1) * 12)


def test_leaf_with_a_varying_input_shape_is_reported():
    widths = list(range(8, 17))
    model = nn.Sequential(
        ElasticLinear(4, 16, out_features_choice=ValueChoice("a", widths)),
        ElasticLinear(16, 16, out_features_choice=ValueChoice("b", widths)),
    )
    with pytest.raises(RuntimeError) as err:
        CostTable.build(model, (4,))
    message = str(err.value)
    assert "cannot tabulate the cost of 1 (ElasticLinear)" in message
    assert "input shape varies" in message
    assert "(1, 8)" in message and "(1, 16)" in message


def test_table_for_a_custom_model_is_exact_per_layer():
    net = nn.Sequential(
        ElasticConv2d(2, 8, ValueChoice("k", [1, 3]), out_channels_choice=ValueChoice("w", [4, 8])),
        nn.ReLU(),
    )
    table = CostTable.build(net, (2, 5, 5), counter=TorchCounter())
    assert table.counter_name == "torch"
    for k in (1, 3):
        for w in (4, 8):
            assert table({"k": k, "w": w}) == Cost(macs=2 * w * k * k * 25, params=2 * w * k * k)


def test_table_gates_units_by_depth_and_layer_choice():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        ElasticDepth("depth", [nn.Conv2d(4, 4, 3, padding=1),
                               ElasticConv2d(4, 4, ValueChoice("k", [1, 3])),
                               nn.Conv2d(4, 4, 1)]),
        LayerChoice("op", {"conv": nn.Conv2d(4, 4, 3, padding=1), "skip": nn.Identity()}),
    )
    # max_combinations=2 forces one unit per block and per candidate, gated by its choice
    table = CostTable.build(net, (1, 6, 6), max_combinations=2)
    gates = {unit.name: unit.gates for unit in table.units}
    assert gates["1.blocks.2"] == (("depth", ">=", 3),)
    assert gates["2.candidates.conv"] == (("op", "==", "conv"),)
    space = table.space
    assert len(space) == 12
    for depth in (1, 2, 3):
        for k in (1, 3):
            for op in ("conv", "skip"):
                sample = {"depth": depth, "k": k, "op": op}
                assert table(sample) == full_count(net, sample, (1, 6, 6)), sample
    # k only matters once the second block runs; "skip" costs nothing
    assert table({"depth": 1, "k": 1, "op": "skip"}) == table({"depth": 1, "k": 3, "op": "skip"})
    assert table({"depth": 2, "k": 1, "op": "skip"}) != table({"depth": 2, "k": 3, "op": "skip"})
    conv_op = Cost(macs=4 * 4 * 9 * 36, params=4 * 4 * 9 + 4)
    with_conv = table({"depth": 3, "k": 3, "op": "conv"})
    without = table({"depth": 3, "k": 3, "op": "skip"})
    assert Cost(with_conv.macs - without.macs, with_conv.params - without.params) == conv_op


class LoopedCells(nn.Module):
    """Cells in an nn.ModuleList that forward() loops over: the list itself never runs (and
    the whole model, 81 combinations, is too big to be one unit)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.cells = nn.ModuleList(
            LayerChoice(f"cell{i}", {"conv3": nn.Conv2d(4, 4, 3, padding=1),
                                     "conv5": nn.Conv2d(4, 4, 5, padding=2),
                                     "skip": nn.Identity()}) for i in range(4))
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.head(x.flatten(1))


def test_cost_table_reaches_modules_inside_a_looped_module_list():
    net = LoopedCells()
    table = CostTable.build(net, (1, 8, 8))  # checks itself against full counts
    for sample in [{"cell0": "conv5", "cell1": "skip", "cell2": "conv3", "cell3": "skip"},
                   {"cell0": "skip", "cell1": "conv3", "cell2": "skip", "cell3": "conv5"}]:
        subnet = extract_subnet(net, sample, torch.zeros(1, 1, 8, 8))
        assert table(sample).macs == FvcoreCounter()(subnet, torch.zeros(1, 1, 8, 8))


class WidthChain(nn.Module):
    """Each layer reads the width the one before chose, as NNI spaces are written: 4**3 * 2 =
    128 samples, too many for one unit, and no layer after the first sees one input shape."""

    def __init__(self):
        super().__init__()
        widths = [ValueChoice(f"w{i}", [2, 4, 6, 8]) for i in range(3)]
        self.convs = nn.Sequential(
            ElasticConv2d(1, 8, 3, out_channels_choice=widths[0]),
            ElasticBatchNorm2d(8),
            ElasticConv2d(8, 8, ValueChoice("k", [1, 3]), out_channels_choice=widths[1]),
            ElasticConv2d(8, 8, 1, out_channels_choice=widths[2]))
        self.head = ElasticLinear(8, 10)

    def forward(self, x):
        return self.head(self.convs(x).mean((2, 3)))


def test_a_unit_whose_input_width_is_chosen_before_it_is_keyed_by_that_label_too():
    net = WidthChain()
    table = CostTable.build(net, (1, 6, 6))
    assert {unit.name: unit.labels for unit in table.units} == {
        "convs.0": ("w0",), "convs.1": ("w0",), "convs.2": ("k", "w1", "w0"),
        "convs.3": ("w2", "w1"), "head": ("w2",)}
    space = table.space
    for sample in [space.random(random.Random(i)) for i in range(24)]:
        assert table(sample) == full_count(net, sample, (1, 6, 6)), sample


def test_a_layer_choice_inside_an_elastic_depth_is_counted_under_every_candidate():
    """The probe samples take every candidate of each label in step, so the candidates other
    than the last run only when the depth also lets their block run."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ElasticDepth("depth", [
        nn.Conv2d(4, 4, 1),
        LayerChoice("op", {"a": nn.Conv2d(4, 4, 3, padding=1), "b": nn.Conv2d(4, 4, 5, padding=2),
                           "c": nn.Conv2d(4, 4, 1), "d": nn.Identity()})]))
    table = CostTable.build(net, (1, 6, 6), max_combinations=2)
    for op in ("a", "b", "c", "d"):
        for depth in (1, 2):
            sample = {"depth": depth, "op": op}
            assert table(sample) == full_count(net, sample, (1, 6, 6)), sample
