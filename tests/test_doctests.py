"""Every ``>>>`` example in the package runs and gives what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import nas_aug
import nas_aug.callbacks
import nas_aug.search_spaces

# callbacks/ and search_spaces/ live outside nas_aug/ on disk, so they are walked on their own
PACKAGES = (nas_aug, nas_aug.callbacks, nas_aug.search_spaces)
MODULES = sorted({name for package in PACKAGES for _, name, _ in
                  pkgutil.walk_packages(package.__path__, package.__name__ + ".")}
                 | {package.__name__ for package in PACKAGES})


def test_every_subpackage_is_walked():
    assert {"nas_aug.callbacks.one_shot_nas", "nas_aug.search_spaces.mobilenet_tiny",
            "nas_aug.space.choice"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if name == "nas_aug.nni":
        pytest.importorskip("nni", reason="NNI is not installed (the nas_aug[nni] extra)")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
