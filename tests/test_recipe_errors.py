"""A bad recipe is refused when it is read, before any data is loaded or trained, with the
file, the key, the value and what is accepted."""

import pytest

from nas_aug.recipe import Recipe

RECIPE = "recipes/digits_spos.yaml"


@pytest.mark.parametrize("override, message", [
    ("supernet.epochs=-1", r"recipe\.supernet\.epochs must be an integer >= 1, got -1"),
    ("supernet.epochs=0", r"supernet\.epochs must be an integer >= 1, got 0"),
    ("retrain.epochs=-2", r"retrain\.epochs must be an integer >= 0, got -2"),
    ("supernet.lr=0", r"supernet\.lr must be a positive number, got 0"),
    ("supernet.lr=.inf", r"supernet\.lr must be a positive number, got inf"),
    ("retrain.weight_decay=-1e-4", r"retrain\.weight_decay must be a non-negative number, "
                                   r"got -0\.0001"),
    ("search.mutation_prob=1.5", r"mutation_prob must be a non-negative number at most 1, "
                                 r"got 1\.5"),
    ("search.mutation_prob=-0.5", r"mutation_prob must be a non-negative number at most 1, "
                                  r"got -0\.5"),
    ("search.population_size=1", r"population_size must be an integer >= 2, got 1"),
    ("supernet.attentive_candidates=1", r"supernet\.attentive_candidates must be an integer "
                                        r">= 2, got 1"),
    ("search.budget.macs=0", r"budget\.macs must be a positive number, got 0"),
    ("search.budget.latency_ms=-3", r"budget\.latency_ms must be a positive number, got -3"),
    ("seed=-1", r"recipe\.seed must be an integer >= 0, got -1"),
])
def test_out_of_range_numbers_are_refused_with_the_key(override, message):
    with pytest.raises(ValueError, match=f"^{RECIPE}: .*{message}"):
        Recipe.from_yaml(RECIPE, [override])


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nsupernet:\n  epochs: 3\n   lr: 0.1\n")
    with pytest.raises(ValueError, match=rf"{path} is not valid YAML: mapping values are not "
                                         r"allowed here \(line 4, column 6\)"):
        Recipe.from_yaml(path)


def test_an_override_that_is_not_yaml_is_named():
    with pytest.raises(ValueError, match=r"override 'search.options=\{a: 1': '\{a: 1' is "
                                         r"not a YAML value"):
        Recipe.from_yaml(RECIPE, ["search.options={a: 1"])


def test_a_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no recipe file at '{tmp_path / 'x.yaml'}'"):
        Recipe.from_yaml(tmp_path / "x.yaml")


def test_edge_values_are_accepted():
    recipe = Recipe.from_yaml(RECIPE, ["retrain.epochs=0", "search.mutation_prob=1",
                                       "supernet.weight_decay=0", "search.budget.macs=5e5"])
    assert (recipe.retrain.epochs, recipe.search.mutation_prob) == (0, 1)
    assert recipe.search.budget.macs == 500_000
