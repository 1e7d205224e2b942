import random

import pytest

from nas_aug.space.choice import MappedChoice, Space, ValueChoice, sample_key


def small_space() -> Space:
    return Space([
        ValueChoice("depth", [2, 1]),
        ValueChoice("kernel", [7, 3, 5]),
        ValueChoice("op", ["skip", "conv", "pool"]),
    ])


# ValueChoice ----------------------------------------------------------------------------------

def test_numeric_candidates_are_sorted():
    assert ValueChoice("k", [5, 3, 7]).candidates == (3, 5, 7)
    assert ValueChoice("e", [6, 2.5, 4]).candidates == (2.5, 4, 6)


def test_non_numeric_candidates_keep_their_order():
    assert ValueChoice("op", ["zeta", "alpha", "mid"]).candidates == ("zeta", "alpha", "mid")
    # bools are not sorted as numbers
    assert ValueChoice("flag", [True, False]).candidates == (True, False)


def test_resolve_reads_the_label():
    choice = ValueChoice("k", [3, 5])
    assert choice.resolve({"k": 5, "other": 3}) == 5
    with pytest.raises(KeyError):
        choice.resolve({"other": 3})


@pytest.mark.parametrize("label", ["", None, 3])
def test_bad_label_is_rejected(label):
    with pytest.raises(ValueError, match="non-empty string") as err:
        ValueChoice(label, [1, 2])
    assert repr(label) in str(err.value)


def test_empty_candidates_are_rejected():
    with pytest.raises(ValueError, match="'k' needs at least one candidate"):
        ValueChoice("k", [])


def test_duplicate_candidates_are_rejected():
    with pytest.raises(ValueError, match=r"'k' has repeated candidates: \[3, 5, 3\]"):
        ValueChoice("k", [3, 5, 3])


def test_mapped_choice_follows_its_source():
    expand = ValueChoice("b0.expand", [6, 3])
    hidden = expand.map(lambda e: 16 * e)
    assert isinstance(hidden, MappedChoice)
    assert hidden.label == "b0.expand"
    assert hidden.source is expand
    assert hidden.candidates == (48, 96)
    assert hidden.resolve({"b0.expand": 3}) == 48
    assert hidden.resolve({"b0.expand": 6}) == 96
    # a mapped choice adds no label of its own to a space
    assert Space([hidden.source]).labels == ("b0.expand",)


# Space ----------------------------------------------------------------------------------------

def test_labels_and_len_is_the_product():
    space = small_space()
    assert space.labels == ("depth", "kernel", "op")
    assert len(space) == 2 * 3 * 3
    assert "kernel" in space and "width" not in space
    assert space.candidates("kernel") == (3, 5, 7)
    assert len(Space([])) == 1  # one (empty) sample


def test_candidates_of_unknown_label_suggests_the_closest():
    with pytest.raises(KeyError, match="did you mean 'kernel'"):
        small_space().candidates("kernle")


def test_smallest_and_largest():
    space = small_space()
    assert space.smallest() == {"depth": 1, "kernel": 3, "op": "skip"}
    assert space.largest() == {"depth": 2, "kernel": 7, "op": "pool"}


def test_random_samples_are_valid_and_seeded():
    space = small_space()
    rng = random.Random(0)
    samples = [space.random(rng) for _ in range(50)]
    for sample in samples:
        assert set(sample) == set(space.labels)
        assert all(sample[label] in space.candidates(label) for label in space.labels)
        assert space.validate(sample) == sample
    # every candidate of every label shows up in 50 draws
    for label in space.labels:
        assert {s[label] for s in samples} == set(space.candidates(label))
    again = random.Random(0)
    assert [space.random(again) for _ in range(50)] == samples
    other = random.Random(1)
    assert [space.random(other) for _ in range(50)] != samples


def test_validate_returns_a_dict_in_label_order():
    space = small_space()
    sample = {"op": "conv", "kernel": 5, "depth": 1}
    validated = space.validate(sample)
    assert validated == sample
    assert list(validated) == ["depth", "kernel", "op"]


def test_validate_names_missing_labels():
    with pytest.raises(ValueError, match=r"missing labels \['kernel'\]"):
        small_space().validate({"depth": 1, "op": "conv"})


def test_validate_names_unknown_label_and_suggests():
    sample = {"depth": 1, "kernel": 3, "op": "conv", "kernal": 3}
    with pytest.raises(ValueError) as err:
        small_space().validate(sample)
    message = str(err.value)
    assert "unknown label 'kernal'" in message
    assert "did you mean 'kernel'?" in message
    assert "missing" not in message


def test_validate_names_out_of_range_value_and_the_valid_ones():
    with pytest.raises(ValueError) as err:
        small_space().validate({"depth": 1, "kernel": 9, "op": "conv"})
    message = str(err.value)
    assert "kernel=9 is not one of [3, 5, 7]" in message
    assert "depth" not in message.split("The space is")[0]


def test_validate_reports_every_problem_at_once():
    with pytest.raises(ValueError) as err:
        small_space().validate({"kernel": 4, "op": "max", "dpth": 1})
    message = str(err.value)
    assert "missing labels ['depth']" in message
    assert "kernel=4 is not one of [3, 5, 7]" in message
    assert "op='max' is not one of ['skip', 'conv', 'pool']" in message
    assert "unknown label 'dpth'" in message


def test_validate_rejects_a_non_mapping():
    with pytest.raises(ValueError, match="got list"):
        small_space().validate([("depth", 1)])


def test_same_label_same_candidates_is_one_label():
    space = Space([ValueChoice("k", [3, 5]), ValueChoice("k", [5, 3]), ValueChoice("w", [1])])
    assert space.labels == ("k", "w")
    assert len(space) == 2


def test_same_label_different_candidates_is_an_error():
    with pytest.raises(ValueError) as err:
        Space([ValueChoice("k", [3, 5]), ValueChoice("k", [3, 7])])
    message = str(err.value)
    assert "'k'" in message and "[3, 5]" in message and "[3, 7]" in message


def test_mutate_stays_within_candidates():
    space = small_space()
    rng = random.Random(3)
    parent = space.smallest()
    children = [space.mutate(parent, prob=0.5, rng=rng) for _ in range(100)]
    assert all(space.validate(child) == child for child in children)
    assert any(child != parent for child in children)
    assert parent == space.smallest()  # not changed in place
    # prob=1 moves every label with more than one candidate to a different value
    moved = space.mutate(parent, prob=1.0, rng=rng)
    assert all(moved[label] != parent[label] for label in space.labels)
    assert space.mutate(parent, prob=0.0, rng=rng) == parent


def test_crossover_takes_each_value_from_a_parent():
    space = small_space()
    rng = random.Random(5)
    a, b = space.smallest(), space.largest()
    children = [space.crossover(a, b, rng) for _ in range(50)]
    for child in children:
        assert space.validate(child) == child
        assert all(child[label] in (a[label], b[label]) for label in space.labels)
    assert any(child["depth"] == 1 for child in children)
    assert any(child["depth"] == 2 for child in children)


def test_sample_key_ignores_dict_order():
    a = {"depth": 1, "kernel": 3, "op": "conv"}
    b = {"op": "conv", "depth": 1, "kernel": 3}
    assert sample_key(a) == sample_key(b) == "depth=1;kernel=3;op='conv'"
    assert sample_key(a) != sample_key({**a, "kernel": 5})
