"""The ``nasbench201`` space: labels, forward, mixing, extraction, costs, arch strings, fits."""

import copy
import random

import lightning.pytorch as pl
import pytest
import torch
from helpers import LitClassifier, calibrate, make_trainer

from nas_aug import build_subnet, load_architecture
from nas_aug.callbacks import OneShotNAS
from nas_aug.constraints import CostTable, FvcoreCounter, count_params
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import NASBench201, create_space
from nas_aug.search_spaces.nasbench201 import OPS, arch_string, parse_arch_string
from nas_aug.space import LayerChoice
from nas_aug.strategies import STRATEGIES
from nas_aug.supernet import activate, choice_modules, extract_subnet, mixed, space_of

SMALL = dict(C=4, N=1, in_chans=1, img_size=8)
SHAPE = (1, 8, 8)
LABELS = ["edge(1<-0)", "edge(2<-0)", "edge(2<-1)", "edge(3<-0)", "edge(3<-1)", "edge(3<-2)"]
KNOWN = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
         "skip_connect~2|")


def every_edge(op, nodes=4):
    return {label: op for label in LABELS[: nodes * (nodes - 1) // 2]}


@pytest.fixture(scope="module")
def net():
    return calibrate(create_space("nasbench201", **SMALL), SHAPE)


@pytest.fixture(scope="module")
def costs(net):
    return CostTable.build(net, SHAPE)


def test_labels_are_the_cell_edges_with_the_five_ops_cheapest_first():
    net = create_space("nasbench201", **SMALL)
    space = space_of(net)
    assert list(space.labels) == LABELS
    assert all(space.candidates(label) == OPS for label in LABELS)
    assert OPS == ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")
    assert space.smallest() == every_edge("none")
    assert space.largest() == every_edge("nor_conv_3x3")
    # one genotype for every cell: 3 stages x N cells, each reading the same 6 labels
    edges = [m for _, m in choice_modules(net)]
    assert all(isinstance(m, LayerChoice) for m in edges) and len(edges) == 3 * 6
    assert sorted(m.choice.label for m in edges) == sorted(LABELS * 3)
    assert net.default_input_shape == SHAPE and isinstance(net, NASBench201)


def test_nodes_and_ops_shape_the_space():
    space = space_of(create_space("nasbench201", **SMALL, nodes=3))
    assert list(space.labels) == ["edge(1<-0)", "edge(2<-0)", "edge(2<-1)"]
    space = space_of(create_space("nasbench201", **SMALL, ops=["nor_conv_3x3", "none"]))
    assert space.candidates("edge(3<-2)") == ("none", "nor_conv_3x3")  # kept cheapest first


@pytest.mark.parametrize("kwargs, message", [
    (dict(ops=["none", "conv_3x3"]), r"unknown operation 'conv_3x3' in ops \(did you mean "
                                     r"'nor_conv_3x3'\?\); the operations are \['none', "),
    (dict(ops=[]), r"ops=\[\] must be a non-empty list"),
    (dict(ops="none"), r"ops='none' must be a non-empty list"),
    (dict(ops=["none", "none"]), r"repeats an operation"),
    (dict(nodes=1), r"nodes must be an integer >= 2, got 1"),
    (dict(C=0), r"C must be an integer >= 1, got 0"),
    (dict(N=0), r"N must be an integer >= 1, got 0"),
    (dict(img_size=10), r"img_size=10 must be a multiple of 4"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=r"nasbench201: .*" + message):
        create_space("nasbench201", **{**SMALL, **kwargs})


def test_forward_shapes_and_the_all_none_cell_passes_no_input(net):
    space = space_of(net)
    x = torch.randn(3, *SHAPE)
    rng = random.Random(0)
    with torch.no_grad():
        for sample in [space.largest(), every_edge("skip_connect")] + [
                space.random(rng) for _ in range(3)]:
            activate(net, sample)
            out = net(x)
            assert out.shape == (3, 10) and torch.isfinite(out).all()
        activate(net, space.smallest())
        out = net(x)
        assert torch.equal(out, out[:1].expand_as(out))  # the same for every input
        assert torch.equal(out, net(torch.randn(3, *SHAPE) * 10))
        assert copy.deepcopy(net).train()(x).std(0).max() == 0  # batch statistics too


def one_hot(space, sample):
    return {label: torch.tensor([float(op == sample[label]) for op in space.candidates(label)])
            for label in space.labels}


@pytest.mark.parametrize("op", list(OPS) + ["random"])
def test_one_hot_mixed_forward_is_the_plain_forward(net, op):
    space = space_of(net)
    sample = space.random(random.Random(1)) if op == "random" else every_edge(op)
    x = torch.randn(4, *SHAPE)
    activate(net, space.largest())  # the mixture, not the active path, must decide
    everything = {label: range(len(OPS)) for label in space.labels}
    with torch.no_grad():
        for support in (None, everything):  # the chosen path only, and all paths computed
            with mixed(net, one_hot(space, sample), support=support):
                out = net(x)
            activate(net, sample)
            torch.testing.assert_close(out, net(x), rtol=0, atol=1e-6)
            activate(net, space.largest())


def test_extracted_subnet_is_plain_with_equal_outputs_and_the_trained_weights(net):
    space = space_of(net)
    x = torch.randn(4, *SHAPE)
    for sample in [parse_arch_string(KNOWN), space.random(random.Random(2))]:
        subnet = extract_subnet(net, sample, x).eval()
        assert choice_modules(subnet) == []
        activate(net, sample)
        with torch.no_grad():
            torch.testing.assert_close(subnet(x), net(x), rtol=0, atol=0)
        trained = {id(t): t for t in net.state_dict().values()}
        weights = {k: v for k, v in subnet.state_dict().items() if v.is_floating_point()}
        assert weights and all(any(torch.equal(v, t) for t in trained.values())
                               for v in weights.values())
        assert all(not any(p is q for q in net.parameters()) for p in subnet.parameters())


def test_cost_table_matches_fvcore_on_extracted_subnets(net, costs):
    space, example = space_of(net), torch.zeros(1, *SHAPE)
    rng = random.Random(3)
    samples = [parse_arch_string(KNOWN), every_edge("nor_conv_1x1"),
               {**every_edge("none"), "edge(3<-1)": "skip_connect", "edge(2<-0)": "nor_conv_3x3"},
               space.random(rng)]
    for sample in samples:
        subnet = extract_subnet(net, sample, example)
        cost = costs(sample)
        assert cost.macs == FvcoreCounter()(subnet, example)
        assert cost.params == count_params(subnet)
    # cells of `none` or `skip_connect` edges cost nothing: only the skeleton remains
    skeleton = create_space("nasbench201", **SMALL, ops=["none"])
    skeleton_subnet = extract_subnet(skeleton, space_of(skeleton).smallest(), example)
    expected = (FvcoreCounter()(skeleton_subnet, example), count_params(skeleton_subnet))
    for op in ("none", "skip_connect"):
        assert (costs(every_edge(op)).macs, costs(every_edge(op)).params) == expected
    assert costs(space.largest()).macs > costs(every_edge("nor_conv_1x1")).macs > expected[0]


def test_arch_strings_round_trip_and_match_nas_bench_201():
    net = create_space("nasbench201", **SMALL)
    space = space_of(net)
    rng = random.Random(4)
    for sample in [space.random(rng) for _ in range(20)]:
        text = net.arch_string(sample)
        assert parse_arch_string(text) == sample and net.parse_arch_string(text) == sample
        assert arch_string(sample) == text
    known = {"edge(1<-0)": "nor_conv_3x3", "edge(2<-0)": "nor_conv_3x3",
             "edge(2<-1)": "avg_pool_3x3", "edge(3<-0)": "skip_connect",
             "edge(3<-1)": "nor_conv_3x3", "edge(3<-2)": "skip_connect"}
    assert arch_string(known) == KNOWN and parse_arch_string(KNOWN) == known
    three = create_space("nasbench201", **SMALL, nodes=3)
    assert three.arch_string(every_edge("none", 3)) == "|none~0|+|none~0|none~1|"


@pytest.mark.parametrize("text, message", [
    ("", "not a non-empty string"),
    ("|nor_conv_3x3~0", r"node 1 \('\|nor_conv_3x3~0'\) is not of the form"),
    ("|nor_conv_3x3~1|", r"input 'nor_conv_3x3~1' of node 1 is not op~i with i in 0..0"),
    ("|conv_3x3~0|", r"unknown operation 'conv_3x3' \(did you mean 'nor_conv_3x3'\?\)"),
    ("|none~0|+|none~0|", r"node 2 has 1 inputs, expected one from each of nodes 0..1"),
    ("|none~0|+|none~0|none~0|", "node 2 reads node 0 twice"),
    ("|none0|", r"input 'none0' of node 1 is not op~i"),
])
def test_a_malformed_arch_string_is_refused(text, message):
    with pytest.raises(ValueError, match="malformed NAS-Bench-201 arch string .*" + message):
        parse_arch_string(text)


def test_arch_strings_are_checked_against_the_space():
    net = create_space("nasbench201", **SMALL, ops=["none", "skip_connect"])
    with pytest.raises(ValueError, match=r"edge\(1<-0\)='nor_conv_3x3' is not one of"):
        net.parse_arch_string(KNOWN)
    with pytest.raises(ValueError, match=r"missing labels \['edge\(3<-0\)'"):
        net.parse_arch_string("|none~0|+|none~0|none~1|")
    with pytest.raises(ValueError, match=r"sets the labels edge\(j<-i\) of one cell"):
        arch_string({"edge(1<-0)": "none", "edge(2<-0)": "none"})
    with pytest.raises(ValueError, match="'conv' is not a NAS-Bench-201 operation"):
        arch_string({"edge(1<-0)": "conv"})


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_each_strategy_fits_and_exports_an_architecture_of_the_space(strategy, tmp_path):
    pl.seed_everything(0)
    backbone = create_space("nasbench201", **SMALL)
    search = dict(population_size=4, generations=1) if strategy == "spos" else {}
    nas = OneShotNAS(strategy=strategy, calibration_batches=1, progress=False, counter="torch",
                     export_dir=tmp_path, **search)
    make_trainer([nas], limit_train_batches=2).fit(LitClassifier(backbone),
                                                   datamodule=DigitsDataModule())
    sample = nas.result.sample
    assert space_of(backbone).validate(sample) == sample
    assert parse_arch_string(arch_string(sample)) == sample
    arch = load_architecture(tmp_path)
    assert arch.arch_string == arch_string(sample)
    assert f"`{arch.arch_string}`" in (tmp_path / "report.md").read_text()
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(build_subnet(arch).eval()(x), backbone.eval()(x))
