"""``CostTable.expected``: the exact expected cost under independent label probabilities."""

import itertools
import math
import random

import pytest
import torch
from helpers import SMALL_SPACES
from torch import nn

from nas_aug.constraints import CostTable, TorchCounter
from nas_aug.search_spaces import create_space
from nas_aug.space import ElasticConv2d, ElasticDepth, LayerChoice, ValueChoice


def gated_net() -> nn.Module:
    """Units gated by a depth and a layer choice; "width" sets two units, one behind a gate,
    whose cost also depends on "k"."""
    width = ValueChoice("width", [2, 4])
    return nn.Sequential(
        nn.Sequential(ElasticConv2d(1, 4, 3, out_channels_choice=width), nn.ReLU(),
                      ElasticConv2d(4, 4, 1)),
        ElasticDepth("depth", [
            ElasticConv2d(4, 4, 3, depthwise=True),
            nn.Sequential(ElasticConv2d(4, 4, ValueChoice("k", [1, 3]),
                                        out_channels_choice=width), ElasticConv2d(4, 4, 1)),
            ElasticConv2d(4, 4, 1),
        ]),
        LayerChoice("op", {
            "conv": ElasticConv2d(4, 4, 3), "skip": nn.Identity(),
            "pw": nn.Sequential(ElasticConv2d(4, 4, 1, out_channels_choice=ValueChoice(
                "w2", [1, 3])), ElasticConv2d(4, 4, 1)),
        }),
    )


@pytest.fixture(scope="module")
def gated():
    table = CostTable.build(gated_net(), (1, 5, 5), counter=TorchCounter(), max_combinations=4)
    units = {unit.name: (unit.labels, unit.gates) for unit in table.units}
    assert units["1.blocks.1"] == (("k", "width"), (("depth", ">=", 2),))
    assert units["2.candidates.pw"] == (("w2",), (("op", "==", "pw"),))
    return table


def all_samples(space):
    for values in itertools.product(*(space.candidates(label) for label in space.labels)):
        yield dict(zip(space.labels, values))


def one_hot(space, sample):
    return {label: torch.tensor([float(c == sample[label]) for c in space.candidates(label)])
            for label in space.labels}


def random_probabilities(space, seed):
    gen = torch.Generator().manual_seed(seed)
    return {label: torch.randn(len(space.candidates(label)), generator=gen).softmax(0)
            for label in space.labels}


def brute_force(table, probabilities, samples):
    """``sum_s P(s) * cost(s)`` over ``samples``, with ``P(s)`` the product of the labels'
    probabilities, in float64."""
    space = table.space
    macs = params = torch.zeros((), dtype=torch.float64)
    for sample in samples:
        weight = math.prod(probabilities[label][space.candidates(label).index(value)].double()
                           for label, value in sample.items())
        cost = table(sample)
        macs, params = macs + weight * cost.macs, params + weight * cost.params
    return macs, params


def test_one_hot_gives_exactly_the_table(gated):
    space = gated.space
    costs = set()
    for sample in all_samples(space):
        macs, params = gated.expected(one_hot(space, sample))
        assert macs.dtype == params.dtype == torch.float64 and macs.dim() == 0
        assert (macs.item(), params.item()) == (gated(sample).macs, gated(sample).params)
        costs.add(gated(sample))
    assert len(costs) > 30  # the samples really cost different amounts (gates merge some)


@pytest.mark.parametrize("seed", range(3))
def test_equals_brute_force_enumeration_and_its_gradient(gated, seed):
    space = gated.space
    assert len(space) == 72
    gen = torch.Generator().manual_seed(seed)
    logits = {label: torch.randn(len(space.candidates(label)), generator=gen).requires_grad_()
              for label in space.labels}
    probabilities = {label: a.softmax(0) for label, a in logits.items()}
    macs, params = gated.expected(probabilities)
    want_macs, want_params = brute_force(gated, probabilities, all_samples(space))
    assert torch.allclose(macs, want_macs, rtol=1e-6, atol=0)
    assert torch.allclose(params, want_params, rtol=1e-6, atol=0)
    for got, want in ((macs, want_macs), (params, want_params)):
        grads = torch.autograd.grad(got, list(logits.values()), retain_graph=True)
        want_grads = torch.autograd.grad(want, list(logits.values()), retain_graph=True)
        for label, g, w in zip(logits, grads, want_grads):
            assert g.dtype == torch.float32  # the logits' own dtype
            assert torch.allclose(g, w, rtol=1e-4, atol=1e-3), label
            assert g.abs().sum() > 0, label  # every label changes the expected cost


def test_small_space_against_enumeration_over_a_few_labels():
    """On mobilenet_tiny, with four labels random and the others one-hot, the expectation is a
    sum over the few labels' combinations."""
    net = create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"])
    table = CostTable.build(net, (1, 8, 8), counter=TorchCounter(), check=False)
    space = table.space
    rng = random.Random(0)
    free = ["stage1.depth", "stage1.block2.expand", "stage1.block2.kernel", "head.width"]
    for seed in range(2):
        fixed = space.random(rng)
        probabilities = {**one_hot(space, fixed),
                         **{k: v for k, v in random_probabilities(space, seed).items()
                            if k in free}}
        samples = [{**fixed, **dict(zip(free, values))} for values in
                   itertools.product(*(space.candidates(label) for label in free))]
        got = table.expected(probabilities)
        want = brute_force(table, probabilities, samples)
        for g, w in zip(got, want):
            assert torch.allclose(g, w, rtol=1e-6, atol=0)
        macs, params = table.expected(one_hot(space, fixed))
        assert (macs.item(), params.item()) == (table(fixed).macs, table(fixed).params)


def test_bad_probabilities_are_named(gated):
    probabilities = random_probabilities(gated.space, 0)
    with pytest.raises(ValueError, match=r"weights are missing for labels \['op'\]"):
        gated.expected({k: v for k, v in probabilities.items() if k != "op"})
    with pytest.raises(ValueError, match=r"weights\['op'\] = .* of shape \(2,\): expected a 1-D "
                                         r"floating-point tensor of 3 weights, one per candidate "
                                         r"of \['conv', 'skip', 'pw'\]"):
        gated.expected({**probabilities, "op": torch.ones(2)})
    with pytest.raises(ValueError, match=r"unknown label 'dept' \(did you mean 'depth'\?\)"):
        gated.expected({**probabilities, "dept": torch.ones(3)})
