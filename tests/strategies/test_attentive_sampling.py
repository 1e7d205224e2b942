"""Attentive sampling (AttentiveNAS's WorstUp / BestUp, without a predictor) as an option of
SPOS: the sandwich rule whose random path is the worst (best) of k drawn by the batch loss."""

import copy
import random

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL_SPACES, LitClassifier, context_of_two_depths, make_trainer

from nas_aug.callbacks import OneShotNAS
from nas_aug.data import DigitsDataModule
from nas_aug.recipe import Recipe, make_search
from nas_aug.search_spaces import create_space
from nas_aug.strategies import SPOS
from nas_aug.supernet import activate


@pytest.mark.parametrize("pick, choose", [("worst", max), ("best", min)])
def test_the_random_path_is_the_worst_or_best_of_the_candidates_by_batch_loss(pick, choose):
    context = context_of_two_depths()
    net, space = context.supernet, context.space
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))

    def batch_loss(sample):  # what OneShotNAS gives: the path activated, its loss on the batch
        activate(net, sample, space)
        with torch.no_grad():
            return net(x).pow(2).mean().item()

    spos = SPOS(sampling="attentive", attentive_candidates=4, attentive=pick)
    spos.seed(7)
    spos.setup(context)
    spos.set_batch_loss(batch_loss)
    extra = spos.train_paths()
    largest = copy.deepcopy(net)  # the first path (the largest) is active for the user's step
    activate(largest, space.largest(), space)
    torch.testing.assert_close(net(x), largest(x))

    rng = random.Random(7)  # the largest and the smallest draw nothing
    candidates = [space.random(rng) for _ in range(4)]
    losses = []
    for sample in candidates:  # by hand: each candidate's loss on the batch
        activate(net, sample, space)
        losses.append(net(x).pow(2).mean().item())
    assert len(set(losses)) > 1  # the pick matters
    assert extra == [space.smallest(), candidates[losses.index(choose(losses))]]
    assert spos.rng.getstate() == rng.getstate()


def test_train_paths_without_a_batch_loss_says_what_is_missing():
    spos = SPOS(sampling="attentive")
    spos.setup(context_of_two_depths())
    with pytest.raises(RuntimeError, match=r"needs set_batch_loss\(...\) before each"):
        spos.train_paths()
    spos.set_batch_loss(lambda sample: 0.0)
    spos.train_paths()
    with pytest.raises(RuntimeError, match="set_batch_loss"):  # the loss was this step's only
        spos.train_paths()


def test_a_skipped_batch_takes_the_first_candidate():
    context = context_of_two_depths()
    spos = SPOS(sampling="attentive", attentive_candidates=3)
    spos.seed(1)
    spos.setup(context)
    spos.set_batch_loss(lambda sample: None)
    assert spos.train_paths()[1] == context.space.random(random.Random(1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampling="attentiv"), "unknown sampling 'attentiv' \\(did you mean 'attentive'\\?\\); "
                                "choose one of \\['attentive', 'sandwich', 'uniform'\\]"),
    (dict(sampling="attentive", attentive_candidates=1),
     "attentive_candidates must be an integer >= 2, got 1"),
    (dict(sampling="attentive", attentive_candidates=2.5),
     "attentive_candidates must be an integer >= 2, got 2.5"),
    (dict(sampling="attentive", attentive="wrost"),
     "unknown attentive pick 'wrost' \\(did you mean 'worst'\\?\\); choose one of "
     "\\['best', 'worst'\\]"),
    (dict(sampling="sandwich", attentive_candidates=5),
     "attentive_candidates=5 and attentive='worst' choose the random paths of "
     "sampling='attentive' \\(got sampling='sandwich'\\)"),
    (dict(attentive="best"), "choose the random paths of sampling='attentive'"),
    (dict(sampling="attentive", sandwich_random=-1),
     "sandwich_random must be an integer >= 0, got -1"),
])
def test_bad_arguments_are_refused_with_the_value_and_what_is_accepted(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SPOS(**kwargs)


def test_attentive_options_show_only_under_attentive_sampling():
    assert SPOS(sampling="attentive", distill_weight=1.0).distills
    assert repr(SPOS(sampling="attentive", attentive_candidates=5)) == (
        "SPOS(sampling='attentive', sandwich_random=1, distill_weight=0.0, "
        "distill_temperature=1.0, attentive_candidates=5, attentive='worst')")
    assert "attentive" not in repr(SPOS(sampling="sandwich"))  # repr and state key as before
    assert OneShotNAS(strategy=SPOS(sampling="attentive")).state_key != \
        OneShotNAS(strategy=SPOS(sampling="attentive", attentive="best")).state_key


class AttentiveProbe(pl.Callback):
    """Placed before and after OneShotNAS: the model and the strategy's rng before its step,
    the buffers once it has chosen the step's paths, and the paths it returned."""

    def __init__(self, nas):
        self.nas, self.steps = nas, []
        train_paths = nas.strategy.train_paths
        nas.strategy.train_paths = lambda: self.steps[-1].setdefault("extra", train_paths())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.steps or "buffers" in self.steps[-1]:  # before OneShotNAS's hook
            self.steps.append({"batch": batch, "net": copy.deepcopy(pl_module.backbone),
                               "rng": copy.deepcopy(self.nas.strategy.rng)})
        else:  # after it
            self.steps[-1]["buffers"] = {k: v.clone() for k, v in
                                         pl_module.backbone.named_buffers()}


def test_a_fit_trains_the_worst_candidate_and_leaves_batch_norm_statistics_alone():
    pl.seed_everything(0)
    model = LitClassifier(create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"]))
    nas = OneShotNAS(strategy=SPOS(sampling="attentive", attentive_candidates=3),
                     population_size=4, generations=1, calibration_batches=1, progress=False)
    probe = AttentiveProbe(nas)
    make_trainer([probe, nas, probe], limit_train_batches=3, limit_val_batches=1,
                 num_sanity_val_steps=0).fit(model, datamodule=DigitsDataModule())
    assert len(probe.steps) == 3
    for step in probe.steps:
        net, (x, y), space = step["net"].train(), step["batch"], nas.space
        # the scoring forwards ran in training mode, yet left every buffer as it was
        for name, before in net.named_buffers():
            torch.testing.assert_close(step["buffers"][name], before, rtol=0, atol=0, msg=name)
        candidates, losses = [space.random(step["rng"]) for _ in range(3)], []
        for sample in candidates:
            scored = copy.deepcopy(net)  # each on the step's own statistics
            activate(scored, sample, space)
            with torch.no_grad():
                losses.append(F.cross_entropy(scored(x), y).item())
        assert step["extra"] == [space.smallest(), candidates[losses.index(max(losses))]]


def test_a_recipe_passes_the_attentive_keys_to_spos(tmp_path):
    recipe = Recipe.from_dict({"supernet": {"sampling": "attentive", "attentive_candidates": 4,
                                            "attentive": "best"}})
    _, (nas,) = make_search(recipe, tmp_path, progress=False)
    assert (nas.strategy.sampling, nas.strategy.attentive_candidates,
            nas.strategy.attentive) == ("attentive", 4, "best")
    bad = Recipe.from_dict({"supernet": {"sampling": "attentive", "attentive": "wrost"}})
    with pytest.raises(ValueError, match="unknown attentive pick 'wrost'"):
        make_search(bad, tmp_path, progress=False)
