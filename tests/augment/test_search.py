"""The policy search methods on their own, driven by hand with a toy model."""

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_aug.augment import Policy, RandAugment
from nas_aug.augment.apply import apply_params, sample_params
from nas_aug.augment.search import DadaSearch, RandAugmentSearch
from nas_aug.bilevel import OuterStep


def _step(images, step=0, lr=0.1):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(images.shape[1], 4, 3), nn.Flatten(), nn.LazyLinear(3))
    net(images)
    targets = torch.arange(images.shape[0]) % 3
    heldout_images = images.flip(0)
    return net, OuterStep(images, lambda x: F.cross_entropy(net(x), targets),
                          lambda: F.cross_entropy(net(heldout_images), targets),
                          list(net.parameters()), lr, step)


def test_dada_step_moves_the_policy_and_leaves_the_model(rgb):
    method = DadaSearch(ops=("rotate", "brightness", "invert"), seed=0)
    net, step = _step(rgb.repeat(2, 1, 1, 1))
    before_model = [p.detach().clone() for p in net.parameters()]
    before_policy = [p.detach().clone() for p in method.policy.parameters()]
    method.outer_step(step)
    assert method.updates == 1
    for p, b in zip(net.parameters(), before_model):
        assert torch.equal(p, b)
    moved = [not torch.equal(p, b) for p, b in zip(method.policy.parameters(), before_policy)]
    assert all(moved)
    assert method.policy.magnitudes.min() >= 0 and method.policy.magnitudes.max() <= 1


def test_dada_updates_every_n_steps(gray):
    method = DadaSearch(ops=("rotate",), update_every=3)
    for step in range(7):
        method.outer_step(_step(gray, step)[1])
    assert method.updates == 3  # steps 0, 3 and 6


def test_dada_state_round_trip_continues_exactly(rgb):
    first = DadaSearch(ops=("rotate", "contrast"), seed=0)
    first.outer_step(_step(rgb)[1])
    second = DadaSearch(ops=("rotate", "contrast"), seed=5)
    second.load_state_dict(copy.deepcopy(first.state_dict()))  # as a checkpoint holds it
    for method in (first, second):
        method.outer_step(_step(rgb, step=1)[1])
    for a, b in zip(first.policy.parameters(), second.policy.parameters()):
        assert torch.equal(a, b)
    assert first.summary() == second.summary()


@pytest.mark.parametrize("score", ["cosine", "dot"])
def test_randaugment_grid_and_gradient_scores(score, gray):
    method = RandAugmentSearch(presets=(), num_ops=(1, 2), magnitudes=(0.2, 0.6), probes_per_step=4,
                               score=score)
    net, step = _step(gray, lr=0.5)
    generator_state = method.generator.get_state()
    method.outer_step(step)
    assert method.score_count == [1, 1, 1, 1]
    # the same scores by hand: the cosine of grad L_val and grad L_train(candidate batch), or
    # lr * their dot product, less their mean over the candidates scored on this batch
    replay = torch.Generator()
    replay.set_state(generator_state)
    heldout = torch.cat([g.flatten() for g in torch.autograd.grad(step.heldout_loss(),
                                                                  step.weights)])
    raw = []
    for policy in method.policies:
        augmented = apply_params(gray, policy, sample_params(policy, 4, replay))
        train = torch.cat([g.flatten() for g in torch.autograd.grad(step.train_loss(augmented),
                                                                    step.weights)])
        raw.append(float(F.cosine_similarity(heldout, train, dim=0)) if score == "cosine"
                   else 0.5 * float(heldout @ train))
    expected = [value - sum(raw) / len(raw) for value in raw]
    assert method.score_sum == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_probes_go_to_the_least_scored_and_stop_with_one_survivor(gray):
    method = RandAugmentSearch(presets=(), num_ops=(1, 2, 3), magnitudes=(0.3,), probes_per_step=2)
    step = _step(gray)[1]
    method.outer_step(step)
    method.outer_step(step)
    assert sorted(method.score_count) == [1, 1, 2]  # every one scored before any twice
    method.survivors = [2]
    counts = list(method.score_count)
    method.outer_step(step)
    assert method.score_count == counts  # nothing left to compare: no probe, no cost


@pytest.mark.parametrize("growth, intervals", [(0.0, [2, 2, 2]), (0.5, [2, 3, 4]),
                                                (1.0, [2, 4, 8])])
def test_probes_grow_sparser_as_the_race_narrows(growth, intervals, gray):
    method = RandAugmentSearch(presets=(), num_ops=(1, 2), magnitudes=(0.1, 0.3, 0.5, 0.7),
                               probe_every=2, probe_growth=growth)  # 8 candidates
    seen = []
    for survivors in ([*range(8)], [0, 1, 2, 3], [0, 1]):
        method.survivors = survivors
        seen.append(method.probe_interval)
    assert seen == intervals
    step, before = _step(gray)[1], 0
    for index in range(1, 17):  # two survivors, both probed at every interval-th step only
        method.outer_step(dataclasses.replace(step, step=index))
        scored, before = sum(method.score_count) - before, sum(method.score_count)
        assert scored == (2 if index % intervals[-1] == 0 else 0), index


def test_randaugment_halves_on_an_even_schedule():
    method = RandAugmentSearch(presets=())  # 3 x 5 = 15 candidates: 4 halvings
    assert method.total_halvings == 4
    method.score_count = [1] * 15
    method.score_sum = [float(i % 7) for i in range(15)]
    survivors = []
    for epoch in range(10):
        method.end_epoch(epoch, max_epochs=10)
        survivors.append(len(method.survivors))
        method.score_count = [1] * 15
    assert survivors == [15, 8, 8, 4, 4, 2, 2, 1, 1, 1]
    assert method.best_policy() == RandAugment(*method.candidates[method.survivors[0]])
    assert [rung["epoch"] for rung in method.rungs] == [1, 3, 5, 7]
    json.dumps(method.summary())  # plain data


def test_randaugment_keeps_the_best_scored_half():
    method = RandAugmentSearch(presets=(), num_ops=(1,), magnitudes=(0.1, 0.3, 0.5, 0.7))
    method.score_sum, method.score_count = [1.0, 4.0, 3.0, 2.0], [1, 1, 1, 1]
    method.end_epoch(0, max_epochs=3)
    assert [method.candidates[i] for i in method.survivors] == [(1, 0.3), (1, 0.5)]


def test_fewer_epochs_than_halvings_halve_several_times_at_once():
    method = RandAugmentSearch(presets=(), num_ops=(1, 2),
                               magnitudes=(0.1, 0.3, 0.5, 0.7))  # 8 candidates: 3 halvings
    method.score_sum, method.score_count = [float(i) for i in range(8)], [1] * 8
    method.end_epoch(0, max_epochs=1)
    assert [method.candidates[i] for i in method.survivors] == [(2, 0.7)]
    assert len(method.rungs) == 1


def test_unscored_candidates_are_reported_when_they_drop_out():
    method = RandAugmentSearch(presets=(), num_ops=(1,), magnitudes=(0.1, 0.3))
    method.score_sum, method.score_count = [1.0, 0.0], [1, 0]
    with pytest.warns(UserWarning, match=r"\[\(1, 0.3\)\] were never scored"):
        method.end_epoch(0, max_epochs=2)
    assert method.rungs[0]["scores"]["(1, 0.3)"] is None
    assert method.mean_score(0) == -math.inf  # scores restart for the next rung


def test_randaugment_augments_each_sample_with_a_surviving_candidate(gray):
    method = RandAugmentSearch(presets=(), num_ops=(1,), magnitudes=(0.0, 1.0), seed=0)
    method.survivors = [0]  # magnitude 0: most ops change little or nothing
    images = gray.repeat(8, 1, 1, 1)
    out = method.augment(images)
    assert out.shape == images.shape
    method.survivors = [1]
    strong = method.augment(images)
    assert (strong - images).abs().mean() > (out - images).abs().mean()


def test_randaugment_state_round_trip(gray):
    first = RandAugmentSearch(presets=(), num_ops=(1, 2), magnitudes=(0.3,), seed=0)
    first.outer_step(_step(gray)[1])
    second = RandAugmentSearch(presets=(), num_ops=(1, 2), magnitudes=(0.3,), seed=9)
    generators = ("generator", "pairing")
    second.load_state_dict(json.loads(json.dumps({k: v for k, v in first.state_dict().items()
                                                  if k not in generators}))
                           | {k: first.state_dict()[k] for k in generators})
    assert torch.equal(first.augment(gray), second.augment(gray))
    assert second.score_sum == first.score_sum and second._probed() == first._probed()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_ops=2), "num_ops must be a non-empty list"),
    (dict(magnitudes=()), "magnitudes must be a non-empty list"),
    (dict(magnitudes=(1.5,)), r"magnitude must be in \[0, 1\]"),
    (dict(num_ops=(0,)), "num_ops"),
    (dict(probe_every=0), "probe_every"),
    (dict(probe_growth=-1), "probe_growth must be a non-negative number, got -1"),
])
def test_randaugment_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandAugmentSearch(**kwargs)


def test_dada_bad_arguments():
    with pytest.raises(ValueError, match="lr must be a positive number"):
        DadaSearch(lr=0)
    with pytest.raises(ValueError, match="update_every"):
        DadaSearch(update_every=0)
    with pytest.raises(ValueError, match=r"unknown hypergradient 'unroled' \(did you mean "
                                         r"'unrolled'\?\); choose one of \['lookahead', "
                                         r"'unrolled'\]"):
        DadaSearch(hypergradient="unroled")
    for bad in (-1.0, True, "1", 20.0):  # 20 x lr 0.05: the whole way back, every step
        with pytest.raises(ValueError, match=r"prior_decay must be a non-negative number with "
                                             r"lr \* prior_decay < 1 .*lr is 0.05\), got "):
            DadaSearch(prior_decay=bad)
    with pytest.raises(ValueError, match="top_k"):
        DadaSearch(top_k=0)


def test_prior_decay_bounds_how_far_the_policy_walks(rgb):
    """The same outer steps with and without the decay: with it, every parameter stays
    closer to its start, and the decay is what the policy applies after each step."""
    walked = {}
    for decay in (0.0, 4.0):
        method = DadaSearch(ops=("rotate", "brightness", "invert"), prior_decay=decay, seed=0)
        start = [p.detach().clone() for p in method.policy.parameters()]
        for step in range(30):
            method.outer_step(_step(rgb.repeat(2, 1, 1, 1), step)[1])
        walked[decay] = [float((p.detach() - s).abs().max())
                         for p, s in zip(method.policy.parameters(), start)]
    assert all(with_decay < without for with_decay, without in zip(walked[4.0], walked[0.0]))
    assert max(walked[4.0]) < 1 / 4.0  # a consistent signal moves it at most 1 / decay


def _left_or_right(count, generator):
    """8x12 noise with a bright left or right half; the side is the label, so a horizontal
    flip turns every sample it touches into the other class."""
    labels = torch.randint(0, 2, (count,), generator=generator)
    left = (torch.arange(12) < 6).float()
    side = torch.where(labels[:, None] == 0, left, 1 - left)
    images = torch.rand(count, 1, 8, 12, generator=generator) * 0.3 + 0.6 * side[:, None, None]
    return images.clamp(0, 1), labels


# the default decay towards the prior damps the response (hflip's probability 0.42 after 120
# steps, 0.28 without), and damps the random walk of every other op more
@pytest.mark.parametrize("hypergradient, prior_decay, most_probability", [
    ("lookahead", 0.0, 0.4), ("unrolled", 0.0, 0.4), ("lookahead", 1.0, 0.45)])
def test_dada_turns_down_an_op_that_destroys_the_label(hypergradient, prior_decay,
                                                        most_probability):
    ops = ("hflip", "brightness", "contrast", "sharpness", "rotate", "shear_x")
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 4)),
                        nn.Flatten(), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    method = DadaSearch(ops=ops, hypergradient=hypergradient, update_every=1, seed=0,
                        prior_decay=prior_decay)
    heldout_images, heldout_labels = _left_or_right(256, generator)
    for step in range(120):
        images, labels = _left_or_right(32, generator)
        rows = torch.randint(0, 256, (32,), generator=generator)
        method.outer_step(OuterStep(
            images, lambda x, labels=labels: F.cross_entropy(net(x), labels),
            lambda rows=rows: F.cross_entropy(net(heldout_images[rows]), heldout_labels[rows]),
            list(net.parameters()), 0.1, step))
        loss = F.cross_entropy(net(method.augment(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    table = method.policy.op_table()
    use = [w * p for w, p in zip(table["weight"], table["probability"])]  # per slot
    assert use[0] < 0.5 * (1 / len(ops)) * 0.5  # below half of where it started
    assert use[0] < 0.5 * min(use[1:])  # and well below every other op
    assert table["probability"][0] < most_probability


def test_presets_race_beside_the_grid_and_can_win():
    method = RandAugmentSearch(num_ops=(1,), magnitudes=(0.3, 0.9))
    assert method.candidates == [(1, 0.3), (1, 0.9), "none", "trivialaugment", "crop_flip"]
    method.score_sum, method.score_count = [1.0, 2.0, 4.0, 3.0, 0.0], [1] * 5
    method.end_epoch(0, max_epochs=1)
    assert [method.candidates[i] for i in method.survivors] == ["none"]
    assert method.best_policy() == Policy.preset("none")
    summary = json.loads(json.dumps(method.summary()))  # plain data
    assert (summary["preset"], summary["num_ops"], summary["survivors"]) == ("none", None,
                                                                             ["none"])
    assert method.metrics()["best_num_ops"] == 0.0


@pytest.mark.parametrize("presets, message", [
    (("trivial",), r"unknown policy preset 'trivial' \(did you mean 'trivialaugment'\?\)"),
    (("none", "none"), "presets must be a list of distinct names"),
    ("none", "presets must be a list of distinct names"),
])
def test_bad_presets_are_named(presets, message):
    with pytest.raises(ValueError, match=message):
        RandAugmentSearch(presets=presets)


@pytest.mark.parametrize("kwargs, message", [
    ({"op_subsets": ("geometric", "colour")},
     r"unknown RandAugment op subset 'colour'; subsets are \['all', 'geometric', 'photometric'\]"),
    ({"op_subsets": ("geometrc",)}, r"'geometrc' \(did you mean 'geometric'\?\)"),
    ({"op_subsets": "all"}, "op_subsets must be a list of distinct names"),
    ({"op_subsets": ()}, "op_subsets must name at least one of"),
    ({"score": "cos"}, r"unknown score 'cos' \(did you mean 'cosine'\?\); scores are"),
])
def test_bad_op_subsets_and_scores_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandAugmentSearch(**kwargs)


def test_op_subsets_race_as_candidates_of_their_own():
    method = RandAugmentSearch(num_ops=(2,), magnitudes=(0.5,), presets=("crop_flip",),
                               op_subsets=("all", "geometric", "photometric"))
    assert method.candidates == [(2, 0.5), (2, 0.5, "geometric"), (2, 0.5, "photometric"),
                                 "crop_flip"]
    assert method.policies[1] == RandAugment(2, 0.5, ops="geometric")
    assert set(method.policies[2].op_names).isdisjoint({"rotate", "shear_x", "translate_y"})
    method.score_sum, method.score_count = [1.0, 3.0, 2.0, 0.0], [1] * 4
    method.end_epoch(0, max_epochs=1)
    summary = json.loads(json.dumps(method.summary()))
    assert (summary["num_ops"], summary["magnitude"], summary["ops"], summary["preset"]) == \
        (2, 0.5, "geometric", None)
    assert method.best_policy().name == "randaugment_geometric"
