"""Every strategy and every outer searcher swaps into OneShotNAS by name and as an object, and a
strategy or searcher written outside nas_aug plugs in without touching the callback."""

import pytest
from helpers import SMALL_SPACES, LitClassifier, make_trainer

from nas_aug import Budget
from nas_aug.callbacks import OneShotNAS
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space
from nas_aug.strategies import (
    SEARCHERS,
    STRATEGIES,
    Scoring,
    Searcher,
    Strategy,
    get_searcher,
    get_strategy,
)
from nas_aug.supernet import activate

FAST = dict(calibration_batches=2, progress=False, top_k=2)
BUDGET = Budget(macs=1_000_000)


def fit(**options):
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    model = LitClassifier(create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"]))
    nas = OneShotNAS(budget=BUDGET, **FAST, **options)
    make_trainer([nas], limit_train_batches=3).fit(model, datamodule=DigitsDataModule())
    return nas


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_each_strategy_swaps_in_by_name_and_as_an_object(name):
    search = dict(population_size=4, generations=2) if STRATEGIES.get(name).uses_searcher else {}
    by_name = fit(strategy=name, **search)
    as_object = fit(strategy=STRATEGIES.get(name)(), **search)
    assert type(by_name.strategy) is type(as_object.strategy) is STRATEGIES.get(name)
    assert by_name.result.strategy == as_object.result.strategy == name
    assert by_name.result.sample == as_object.result.sample
    assert by_name.result.score == as_object.result.score
    assert by_name.result.chosen.macs <= BUDGET.macs


@pytest.mark.parametrize("name", SEARCHERS.names())
def test_each_searcher_swaps_in_by_name_and_as_an_object(name):
    settings = {"evolution": dict(population_size=4, generations=2),
                "random": dict(num_samples=6, batch_size=3),
                "aging_evolution": dict(num_samples=6, population_size=4, sample_size=2),
                "local_search": dict(num_samples=6),
                "optuna": dict(num_samples=6)}[name]
    as_object = fit(search=SEARCHERS.get(name)(**settings))
    assert isinstance(get_searcher(name), SEARCHERS.get(name))
    scored = [c.sample for c in as_object.result.candidates]
    assert len(scored) == as_object.search.total == len(as_object.strategy.search_state
                                                         ["history"])
    assert len({str(sorted(s.items())) for s in scored}) == len(scored)  # never one twice
    by_name = OneShotNAS(search=name)  # the searcher's defaults
    assert type(by_name.search) is SEARCHERS.get(name)
    assert repr(by_name.search) == repr(SEARCHERS.get(name)())


class PickSmallest(Strategy):
    """A strategy from outside nas_aug: trains the largest path and picks the smallest
    sub-network, scored once."""

    name = "pick_smallest"
    uses_searcher = True

    def train_paths(self):
        activate(self.context.supernet, self.context.space.largest(), self.context.space)
        return []

    def validation_sample(self):
        return self.context.space.largest()

    def finish(self, scoring: Scoring):
        context = self.context
        sample = context.space.smallest()
        candidate = context.candidate(sample, scoring.evaluate(sample), seconds=0.0)
        return context.result(candidate, [candidate], [candidate], self.name)


class Smallest(Searcher):
    """A searcher from outside nas_aug: proposes the smallest sample once."""

    name = "smallest"

    @property
    def total(self):
        return 1

    def _exhausted(self):
        return self._rounds >= 1

    def _propose(self, seen):
        return [self.space.smallest()]


def test_a_strategy_and_a_searcher_written_elsewhere_plug_in():
    STRATEGIES.add("pick_smallest", PickSmallest)
    try:
        nas = fit(strategy="pick_smallest")
    finally:
        STRATEGIES._entries.pop("pick_smallest")
    assert nas.result.strategy == "pick_smallest"
    assert nas.result.sample == nas.space.smallest()
    search = Smallest().bind(nas.space)
    assert search.ask() == nas.space.smallest() and search.ask() is None


@pytest.mark.parametrize("options, message", [
    (dict(strategy=STRATEGIES.get("darts")(), lr=0.1),
     r"options \['lr'\] go into the strategy object itself"),
    (dict(strategy="darts", search="random"), "runs no outer searcher"),
    (dict(search="evolution", population_size=4), r"shorthand for search=Evolution"),
    (dict(search="grid"), r"unknown searcher 'grid'; choose one of \['aging_evolution', "
                          r"'evolution', 'local_search', 'optuna', 'random'\]"),
    (dict(calibration_batch=4), r"\['calibration_batch'\] \(did you mean 'calibration_batches'"),
])
def test_mixed_up_strategy_and_searcher_arguments_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        OneShotNAS(**options)


def test_get_strategy_takes_objects_and_names():
    darts = get_strategy("darts", lr=0.5)
    assert get_strategy(darts) is darts and darts.lr == 0.5
    assert repr(get_strategy("spos", sampling="sandwich")) == \
        "SPOS(sampling='sandwich', sandwich_random=1, distill_weight=0.0, " \
        "distill_temperature=1.0)"
