"""Every outer searcher over a synthetic table: it finds the optimum within its query budget,
never asks an infeasible or repeated sample, and resumes exactly from its JSON state."""

import json
import random

import pytest

from nas_aug.space import Space, ValueChoice
from nas_aug.space.choice import sample_key
from nas_aug.strategies import SEARCHERS, AgingEvolution, LocalSearch, OptunaSearch

SPACE = Space([ValueChoice(label, [0, 1, 2, 3]) for label in "abcd"])  # 256 samples
LIMIT = 7  # the constraint: sum of the values


def score(sample):
    """A smooth landscape with one optimum under the constraint: (a, b, c, d) = (3, 2, 1, 1),
    plus a fixed pseudo-random ripple."""
    target = {"a": 3, "b": 2, "c": 1, "d": 1}
    ripple = random.Random(sample_key(sample)).random() * 0.1
    return -sum(abs(sample[k] - target[k]) for k in target) + ripple


def feasible(sample):
    return sum(sample.values()) <= LIMIT


SETTINGS = {"evolution": dict(population_size=10, generations=10),
            "random": dict(num_samples=100),
            "aging_evolution": dict(num_samples=100, population_size=10, sample_size=3),
            "local_search": dict(num_samples=100),
            "optuna": dict(num_samples=60)}  # TPE: fewer queries, each slower


@pytest.mark.parametrize("name", SEARCHERS.names())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_searcher_finds_the_optimum_without_infeasible_or_repeated_samples(name, seed):
    search = SEARCHERS.get(name)(**SETTINGS[name]).bind(SPACE, feasible, seed=seed)
    asked = []

    def evaluate(sample):
        asked.append(sample_key(sample))
        assert feasible(sample), sample
        return score(sample)

    best, _ = search.run(evaluate, progress=False)
    assert len(asked) == len(set(asked)) <= search.total
    if name != "random":  # random search finds it only by luck within 100 of 160 samples
        assert best == {"a": 3, "b": 2, "c": 1, "d": 1}, (name, seed)


@pytest.mark.parametrize("searcher", [AgingEvolution(num_samples=40, population_size=8),
                                      LocalSearch(num_samples=40),
                                      OptunaSearch(num_samples=30)], ids=lambda s: s.name)
def test_resume_from_json_state_continues_exactly(searcher):
    whole = searcher.bind(SPACE, feasible, seed=3)
    whole.run(score, progress=False)
    first = searcher.bind(SPACE, feasible, seed=3)
    for _ in range(17):
        sample = first.ask()
        first.tell(sample, score(sample))
    resumed = searcher.bind(SPACE, feasible, seed=3)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    resumed.run(score, progress=False)
    assert resumed.history == whole.history


def test_local_search_climbs_one_label_at_a_time_and_restarts_at_a_local_optimum():
    search = LocalSearch(num_samples=60).bind(SPACE, feasible, seed=0)
    search.run(score, progress=False)
    history = search.history
    incumbent = history[0]
    restarts = 0
    for sample, value in history[1:]:
        changed = sum(sample[k] != incumbent[0][k] for k in sample)
        if changed != 1:  # a restart happens only when no neighbour is left to improve
            untried = [n for n in SPACE.neighbours(incumbent[0]) if feasible(n)
                       and all(n != s for s, _ in history[:history.index((sample, value))])]
            assert not untried
            incumbent, restarts = (sample, value), restarts + 1
        elif value > incumbent[1]:
            incumbent = (sample, value)
    assert restarts >= 1


@pytest.mark.parametrize("seed", range(12))
def test_aging_evolution_uses_its_whole_budget_when_a_parent_has_no_new_neighbour(seed):
    # 125 samples, 60 asked: tournament winners often have every neighbour seen already
    space = Space([ValueChoice(label, [0, 1, 2, 3, 4]) for label in "abc"])
    search = AgingEvolution(num_samples=60, population_size=10, sample_size=3).bind(space,
                                                                                   seed=seed)
    asked = []
    search.run(lambda s: asked.append(sample_key(s)) or -sum(s.values()), progress=False)
    assert len(asked) == len(set(asked)) == 60


@pytest.mark.parametrize("kwargs, message", [
    (dict(population_size=1), "population_size must be an integer >= 2"),
    (dict(population_size=4, sample_size=5), "sample_size must be an integer"),
    (dict(population_size=8, num_samples=4), "num_samples must be an integer >= 8"),
])
def test_aging_evolution_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AgingEvolution(**kwargs)


def test_an_unknown_searcher_gets_the_closest_name():
    with pytest.raises(ValueError, match="'aging_evolution'"):
        SEARCHERS.get("aging_evolutoin")


def test_optuna_search_names_the_extra_when_optuna_is_missing(monkeypatch):
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: (_ for _ in ()).throw(
        ImportError(name)) if name == "optuna" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'nas_aug\[optuna\]'"):
        OptunaSearch(num_samples=4).bind(SPACE).ask()


def test_optuna_search_takes_a_sampler_factory():
    import optuna

    made = []

    def factory(seed):
        made.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    search = OptunaSearch(sampler=factory, num_samples=5).bind(SPACE, feasible)
    search.run(score, progress=False)
    assert len(search.history) == 5 and len(made) >= 5
    with pytest.raises(ValueError, match="unknown Optuna sampler 'tpee' \\(did you mean 'tpe'"):
        OptunaSearch(sampler="tpee")


def test_spos_ranks_the_seeds_beside_its_searched_samples():
    """A looser budget's search is seeded with the tighter budgets' winners: a seed the
    searcher itself never tried still wins when it scores best, and is scored once."""
    from helpers import context_of_two_depths

    from nas_aug.strategies import SPOS, RandomSearch, Scoring

    best = {"depth": 2, "b0.width": 2, "b1.width": 2}
    scored = []

    def evaluate(sample):
        scored.append(sample)
        return 1.0 if sample == best else 0.5

    def finish(seeds):
        spos = SPOS()
        spos.setup(context_of_two_depths(searcher=RandomSearch(num_samples=2), seed=0))
        scored.clear()
        return spos.finish(Scoring(evaluate=evaluate, progress=False, seeds=seeds))

    assert finish(()).sample != best  # the searcher alone misses it
    result = finish((best,))
    assert result.sample == best and result.score == 1.0
    assert sum(sample == best for sample in scored) == 2  # scored, then left active


@pytest.mark.parametrize("name", sorted(SEARCHERS.names()))
def test_batched_evaluation_tells_the_same_history(name):
    """run(evaluate_batch=...) scores what the searcher offers before it needs a tell (a whole
    generation for evolution) in one call, and the search goes exactly as one by one."""
    space = Space([ValueChoice(label, [1, 2, 3, 4]) for label in "abc"])

    def score(sample):
        return -abs(sample["a"] - 3) - abs(sample["b"] - 1) + 0.1 * sample["c"]

    def search():
        searcher = SEARCHERS.get(name)()
        return searcher.bind(space, seed=5)

    one_by_one, batched, batches = search(), search(), []
    one_by_one.run(score, progress=False)
    batched.run(score, progress=False,
                evaluate_batch=lambda samples: batches.append(len(samples)) or
                [score(s) for s in samples])
    assert batched.history == one_by_one.history
    assert sum(batches) == len(one_by_one.history)
    if name == "evolution":
        assert max(batches) > 1  # generations, not single samples
