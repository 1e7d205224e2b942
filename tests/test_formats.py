"""TorchScript, ONNX and torch.export files of an exported sub-network, checked numerically."""

import random

import pytest
import torch
from helpers import SMALL_SPACES, calibrate, search_result

from nas_aug import build_subnet, load_architecture
from nas_aug.cli import main
from nas_aug.constraints import CostTable
from nas_aug.export import export_architecture
from nas_aug.formats import FORMATS, export_format
from nas_aug.search_spaces import create_space
from nas_aug.supernet import space_of

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    supernet = calibrate(create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"]), SHAPE)
    sample = space_of(supernet).random(random.Random(3))
    cost = CostTable.build(supernet, SHAPE)(sample)
    export_architecture(directory, supernet, search_result(sample, SHAPE, cost, score=0.5))
    return directory


@pytest.mark.parametrize("fmt", sorted(set(FORMATS) - {"timm"}))  # timm: test_timm_export.py
def test_each_format_matches_the_pytorch_subnet(exported, fmt):
    path, difference = export_format(exported, fmt)
    assert path == exported / FORMATS[fmt][0] and path.stat().st_size > 0
    assert difference <= 1e-4
    # run the file on its own, on a batch size never traced
    x = torch.rand(5, *SHAPE)
    expected = build_subnet(load_architecture(exported)).eval()(x)
    got = FORMATS[fmt][2](path, x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not [p for p in exported.iterdir() if ".tmp." in p.name]


def test_unknown_format_is_rejected(exported):
    with pytest.raises(ValueError, match=r"unknown format 'onx' \(did you mean 'onnx'\?\)"):
        export_format(exported, "onx")


def test_export_command(exported, capsys):
    assert main(["export", str(exported), "--format", "torchscript", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "subnet.torchscript.pt" in out and "subnet.onnx" in out and "max |difference|" in out


def test_export_command_without_an_export(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "no architecture at" in capsys.readouterr().err
