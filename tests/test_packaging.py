"""The wheel a pip user installs: its files and metadata, and ``nas-aug`` run from it outside
the repository."""

import email
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from test_cli import TINY, overrides

import nas_aug

ROOT = Path(__file__).parents[1]
DIST_INFO = f"nas_aug-{nas_aug.__version__}.dist-info"
# source folder -> its place in the wheel (pyproject's [tool.setuptools.package-dir])
PACKAGES = {"nas_aug": "nas_aug", "callbacks": "nas_aug/callbacks",
            "search_spaces": "nas_aug/search_spaces", "recipes": "nas_aug/recipes"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (a build in the repository would leave its
    build/ folder there)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(tmp / "dist"), str(source)],
                   check=True, capture_output=True, text=True)
    (path,) = (tmp / "dist").glob("nas_aug-*.whl")
    return path


def test_wheel_holds_every_package_the_recipes_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                assert f"{package}/{path.relative_to(ROOT / folder).as_posix()}" in names
    assert {"nas_aug/recipes/digits_spos.yaml", "nas_aug/callbacks/__init__.py",
            "nas_aug/search_spaces/__init__.py", "nas_aug/py.typed"} <= names
    license_file = zipfile.ZipFile(wheel).read(f"{DIST_INFO}/licenses/LICENSE").decode()
    assert "Apache License" in license_file and "Version 2.0, January 2004" in license_file
    assert "nas-aug = nas_aug.cli:main" in \
        zipfile.ZipFile(wheel).read(f"{DIST_INFO}/entry_points.txt").decode()


def test_wheel_metadata(wheel):
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{DIST_INFO}/METADATA"))
    assert meta["Name"] == "nas_aug" and meta["Version"] == nas_aug.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.10"
    required = {Requirement(r).name: Requirement(r).specifier
                for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert {"lightning", "timm", "kornia", "fvcore", "pyyaml"} <= set(required)
    for name, newest, excluded in (("torch", "2.14.9", "2.15"),  # minor ranges, not patch pins
                                   ("torchvision", "0.29.9", "0.30")):
        assert newest in required[name] and excluded not in required[name]
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert "Repository, https://github.com/nas-aug/nas_aug" in meta.get_all("Project-URL")


def test_installed_wheel_runs_a_bundled_recipe_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def run(*command):
        done = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    where = run(sys.executable, "-c", "import nas_aug.callbacks, nas_aug.recipes; "
                "print(nas_aug.__file__, nas_aug.callbacks.__file__, nas_aug.recipes.__file__)")
    assert all(Path(path).is_relative_to(site) for path in where.split())
    assert "digits_spos " in run(sys.executable, "-m", "nas_aug.cli", "recipes")

    printed = run(str(site / "bin" / "nas-aug"), "run", "digits_spos", "--out", "run",
                  "--quiet", *overrides(TINY))
    assert "| searched, retrained from scratch |" in printed
    assert json.loads((elsewhere / "run" / "architecture.json").read_text())["macs"] > 0


def test_timm_is_imported_only_by_what_needs_it():
    """``import nas_aug`` and the callbacks leave timm out (2-3 s of imports); the timm
    integration and a catalogue space, whose layers are timm's, bring it."""
    probe = ("import sys\n"
             "def has_timm(): return 'timm' in sys.modules\n"
             "import nas_aug, nas_aug.callbacks, nas_aug.recipe\n"
             "light = has_timm()\n"
             "nas_aug.ElasticSpec\n"
             "print(light, has_timm())\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "True"]
