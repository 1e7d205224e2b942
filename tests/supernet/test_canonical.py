"""One sample per architecture: labels without effect are set to their smallest candidate."""

import random

import torch

from nas_aug.constraints import CostTable
from nas_aug.search_spaces import create_space
from nas_aug.space import Space, ValueChoice
from nas_aug.strategies import Evolution
from nas_aug.supernet import canonical_sample, extract_subnet, space_of

SPACE = dict(num_classes=10, in_chans=1, img_size=8, expand_ratios=(3, 6), kernel_sizes=(3, 5))


def test_canonical_sample_is_the_same_architecture():
    net = create_space("mobilenet_tiny", **SPACE).eval()
    space, table = space_of(net), CostTable.build(net, (1, 8, 8))
    rng, x = random.Random(0), torch.rand(4, 1, 8, 8)
    changed = 0
    for _ in range(10):
        sample = space.random(rng)
        canonical = canonical_sample(net, sample, space)
        assert canonical_sample(net, canonical, space) == canonical
        assert table(canonical) == table(sample)
        torch.testing.assert_close(extract_subnet(net, canonical, x[:1])(x),
                                   extract_subnet(net, sample, x[:1])(x))
        changed += canonical != sample
    assert changed > 0  # depths below the maximum leave labels without effect


def test_labels_of_skipped_blocks_collapse():
    net = create_space("mobilenet_tiny", **SPACE)
    space = space_of(net)
    shallow = {**space.largest(), "stage1.depth": 1}
    other = {**shallow, "stage1.block2.expand": 3, "stage1.block1.kernel": 3}
    assert canonical_sample(net, shallow) == canonical_sample(net, other)
    assert canonical_sample(net, shallow)["stage1.block2.expand"] == 3
    assert canonical_sample(net, shallow)["stage1.block0.expand"] == 6


def test_evolution_asks_each_canonical_architecture_once():
    space = Space([ValueChoice("depth", [1, 2]), ValueChoice("a", [1, 2, 3]),
                   ValueChoice("b", [1, 2, 3])])

    def canonical(sample):  # "b" only matters at depth 2
        return {**sample, "b": sample["b"] if sample["depth"] == 2 else 1}

    search = Evolution(space, population_size=4, generations=5, canonical=canonical)
    search.run(lambda s: s["a"] + s["b"] * s["depth"], progress=False)
    asked = [tuple(sorted(s.items())) for s, _ in search.history]
    assert len(asked) == len(set(asked)) == 12  # 3 at depth 1 + 9 at depth 2: all, once each
    assert all(canonical(s) == s for s, _ in search.history)
