import json
import math

import pytest

from nas_aug.space.choice import Space, ValueChoice, sample_key
from nas_aug.strategies import Evolution

TARGET = {"l0": 2, "l1": 0, "l2": 3, "l3": 1}


def grid_space(labels: int = 4, values: int = 4) -> Space:
    return Space([ValueChoice(f"l{i}", list(range(values))) for i in range(labels)])


def separable(sample: dict) -> float:
    """Peaks at TARGET (score 0); any other sample scores below 0."""
    return -float(sum((sample[label] - value) ** 2 for label, value in TARGET.items()))


def drive(search: Evolution, score, steps: int | None = None) -> None:
    """Ask/tell by hand, ``steps`` times or until done."""
    while not search.done and (steps is None or len(search.history) < steps):
        sample = search.ask()
        assert sample is not None  # told one by one, ask never waits
        search.tell(sample, score(sample))


def keys(history) -> list[str]:
    return [sample_key(sample) for sample, _ in history]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_finds_global_optimum_with_distinct_samples(seed):
    space = grid_space()
    search = Evolution(space, population_size=16, generations=10, mutation_prob=0.25,
                             seed=seed)
    best, score = search.run(separable, progress=False)
    assert (best, score) == (TARGET, 0.0)
    assert search.done and search.ask() is None
    assert len(search.history) <= 16 * 10 < len(space)
    assert len(set(keys(search.history))) == len(search.history)
    assert all(space.validate(sample) == sample for sample, _ in search.history)


def test_run_shows_progress_with_best_score(capsys):
    search = Evolution(grid_space(), population_size=4, generations=2)
    search.run(separable)
    assert "best=" in capsys.readouterr().err


def test_constraint_is_respected_by_every_asked_sample():
    space = grid_space()
    budget = lambda s: sum(s.values()) <= 5  # noqa: E731
    asked = []
    search = Evolution(space, population_size=8, generations=6, constraint=budget, seed=4)
    best, _ = search.run(lambda s: asked.append(s) or float(sum(s.values())), progress=False)
    assert len(asked) == len(search.history) > 8
    assert all(budget(sample) for sample in asked)
    assert sum(best.values()) == 5  # the largest feasible total


def test_infeasible_constraint_raises_with_useful_message():
    search = Evolution(grid_space(), constraint=lambda s: False, max_tries=50)
    with pytest.raises(ValueError, match=r"found only 0 of population_size=16 .*constraint"):
        search.ask()
    tight = Evolution(grid_space(), population_size=8, max_tries=5000,
                            constraint=lambda s: sum(s.values()) <= 1)
    with pytest.raises(ValueError, match=r"found only 5 of population_size=8 .*too tight"):
        tight.ask()


def test_space_smaller_than_population_is_named():
    search = Evolution(grid_space(labels=2, values=2), population_size=6, max_tries=100)
    with pytest.raises(ValueError, match="the space has only 4 samples"):
        search.ask()


def test_exhausted_space_finishes_early_without_repeats():
    space = grid_space(labels=2, values=3)
    search = Evolution(space, population_size=4, generations=20, mutation_prob=0.5,
                             max_tries=200)
    search.run(lambda s: float(s["l0"] + s["l1"]), progress=False)
    assert search.done and search.ask() is None
    assert len(search.history) <= len(space) == 9
    assert len(set(keys(search.history))) == len(search.history)


def test_manual_ask_tell_gives_the_same_history_as_run():
    kwargs = dict(population_size=6, generations=5, mutation_prob=0.3, seed=7)
    by_run = Evolution(grid_space(), **kwargs)
    by_run.run(separable, progress=False)
    by_hand = Evolution(grid_space(), **kwargs)
    drive(by_hand, separable)
    assert by_hand.history == by_run.history and len(by_run.history) > 6
    assert by_hand.best == by_run.best


def test_ask_returns_none_while_a_generation_awaits_tell():
    search = Evolution(grid_space(), population_size=4, generations=2)
    first = [search.ask() for _ in range(4)]
    assert search.ask() is None and not search.done
    for sample in first[:3]:
        search.tell(sample, separable(sample))
    assert search.ask() is None and not search.done
    search.tell(first[3], separable(first[3]))
    child = search.ask()
    assert child is not None and sample_key(child) not in keys(search.history)


def mixed_space() -> Space:
    """Labels with string and tuple candidates too, which JSON alone would not round-trip."""
    return Space([*grid_space()._choices.values(), ValueChoice("act", ["relu", "gelu"]),
                  ValueChoice("kernel", [(3, 3), (5, 5), (7, 7)])])


def mixed_score(sample: dict) -> float:
    return separable(sample) + (sample["act"] == "gelu") - abs(sample["kernel"][0] - 5)


@pytest.mark.parametrize(("steps", "ask_before_saving"), [(0, False), (5, False), (8, False),
                                                          (13, True), (24, True)])
def test_resume_from_json_state_continues_exactly(steps, ask_before_saving):
    kwargs = dict(population_size=8, generations=6, mutation_prob=0.2, seed=11,
                  constraint=lambda s: s["l0"] + s["l1"] <= 4)
    reference = Evolution(mixed_space(), **kwargs)
    reference.run(mixed_score, progress=False)

    first = Evolution(mixed_space(), **kwargs)
    drive(first, mixed_score, steps)
    if ask_before_saving:  # a sample out for evaluation when the state is saved
        assert first.ask() is not None
    state = json.loads(json.dumps(first.state_dict()))
    resumed = Evolution(mixed_space(), **kwargs)
    resumed.load_state_dict(state)
    assert resumed.history == first.history
    resumed.run(mixed_score, progress=False)
    assert resumed.history == reference.history and len(reference.history) > 24
    assert resumed.best == reference.best


def test_load_state_dict_rejects_a_state_for_another_space():
    search = Evolution(grid_space(), population_size=4)
    drive(search, separable, 4)
    other = Evolution(grid_space(labels=3), population_size=4)
    with pytest.raises(ValueError, match="expected version 1 with labels"):
        other.load_state_dict(search.state_dict())
    with pytest.raises(ValueError, match="not a state_dict"):
        other.load_state_dict({"version": 1})


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(population_size=1), "population_size must be an integer >= 2, got 1"),
    (dict(population_size=4.0), "population_size must be an integer >= 2, got 4.0"),
    (dict(generations=0), "generations must be an integer >= 1, got 0"),
    (dict(population_size=6, parents=1), r"parents must be an integer in \[2, 6\], got 1"),
    (dict(population_size=6, parents=7), r"parents must be an integer in \[2, 6\], got 7"),
    (dict(mutation_prob=-0.1), r"mutation_prob must be a number in \[0, 1\], got -0.1"),
    (dict(mutation_prob=1.5), r"mutation_prob must be a number in \[0, 1\], got 1.5"),
    (dict(mutation_prob=math.nan), r"mutation_prob must be a number in \[0, 1\], got nan"),
    (dict(max_tries=0), "max_tries must be an integer >= 1, got 0"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Evolution(grid_space(), **kwargs)


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="space must be a nas_aug Space"):
        Evolution({"l0": [1, 2]})
    with pytest.raises(TypeError, match="constraint must be a callable"):
        Evolution(grid_space(), constraint=True)


def test_parents_default_to_half_the_population():
    assert Evolution(grid_space(), population_size=16).parents == 8
    assert Evolution(grid_space(), population_size=3).parents == 2


def test_tell_rejects_unknown_and_repeated_samples():
    search = Evolution(grid_space(), population_size=4)
    sample = search.ask()
    other = {**sample, "l0": (sample["l0"] + 1) % 4}
    with pytest.raises(ValueError, match=r"cannot tell sample .*ask\(\) never returned it"):
        search.tell(other, 1.0)
    search.tell(sample, 1.0)
    with pytest.raises(ValueError, match="already told"):
        search.tell(sample, 2.0)
    assert search.history == [(sample, 1.0)]


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, None, "high"])
def test_tell_rejects_non_finite_scores(score):
    search = Evolution(grid_space(), population_size=4)
    sample = search.ask()
    with pytest.raises(ValueError, match="score must be a finite number"):
        search.tell(sample, score)
    search.tell(sample, 0.5)  # the sample still awaits a valid score
    assert search.best == (sample, 0.5)


def test_best_and_top():
    search = Evolution(grid_space(), population_size=6)
    with pytest.raises(RuntimeError, match="no score told yet"):
        search.best  # noqa: B018
    drive(search, separable, 6)
    scores = [score for _, score in search.top(3)]
    assert scores == sorted((s for _, s in search.history), reverse=True)[:3]
    assert search.top(1)[0] == search.best and search.top(0) == []
    assert len(search.top(100)) == 6
