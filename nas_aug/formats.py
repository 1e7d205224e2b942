"""Take an exported sub-network anywhere: TorchScript, ONNX and ``torch.export`` files that
run without nas_aug, and timm's own definition of a timm sub-network (``timm.json``), each
checked numerically against the PyTorch sub-network when written."""

from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .elastic_models.timm_export import TIMM_FILE
from .export import build_subnet, load_architecture, load_timm
from .io import add_to_manifest, atomic_write
from .registry import Registry


def _write_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.jit.save(torch.jit.trace(net, example), str(path))


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    return torch.jit.load(str(path))(x)


def _write_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    # the TorchScript-based exporter: the torch.export-based one needs onnxscript
    torch.onnx.export(net, (example,), str(path), input_names=["input"],
                      output_names=["output"], dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("checking an ONNX export needs onnxruntime: "
                          "pip install 'nas_aug[onnx]'") from err
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _write_pt2(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    name = next(iter(inspect.signature(net.forward).parameters))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (example,), dynamic_shapes={name: {0: batch}})
    torch.export.save(program, str(path))


def _run_pt2(path: Path, x: torch.Tensor) -> torch.Tensor:
    return torch.export.load(str(path)).module()(x)


def _write_timm(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    from .elastic_models.timm_export import timm_definition

    path.write_text(json.dumps(timm_definition(net), indent=2) + "\n")


def _run_timm(path: Path, x: torch.Tensor) -> torch.Tensor:
    return load_timm(path).eval()(x)  # with the export's weights beside it


class Format(NamedTuple):
    """A format a sub-network is written in: its file, its writer and its runner (the check)."""

    filename: str
    write: Callable[[nn.Module, torch.Tensor, Path], None]
    run: Callable[[Path, torch.Tensor], torch.Tensor]


FORMATS: Registry[Format] = Registry("format")
FORMATS.add("torchscript", Format("subnet.torchscript.pt", _write_torchscript, _run_torchscript))
FORMATS.add("onnx", Format("subnet.onnx", _write_onnx, _run_onnx))
FORMATS.add("pt2", Format("subnet.pt2", _write_pt2, _run_pt2))
FORMATS.add("timm", Format(TIMM_FILE, _write_timm, _run_timm))


def export_format(directory: str | os.PathLike, fmt: str, atol: float = 1e-4,
                  subnet: nn.Module | None = None) -> tuple[Path, float]:
    """Write the sub-network exported in ``directory`` as ``fmt`` ("torchscript", "onnx",
    "pt2" for ``torch.export``, or "timm" for timm's definition of a timm MobileNetV3 /
    EfficientNet / ResNet sub-network, see :func:`~nas_aug.elastic_models.timm_definition`)
    beside it; return the file and the largest absolute difference between its outputs (timm:
    timm's model loaded with the exported weights) and the PyTorch sub-network's on a batch of
    another size than the one traced (so a fixed batch size cannot pass unnoticed). A
    difference above ``atol`` (times the largest output magnitude where that is above 1: float
    rounding grows with the outputs) raises; a sub-network the format cannot take raises
    ``RuntimeError`` saying why.

    An export of a model that is not a registered space (an elasticized timm model) holds its
    ``timm.json`` from the start (checked then against the searched sub-network) and its
    sub-network is rebuilt from it; "timm" then checks that file as it is. The sub-network of
    an NNI space is built by the user's own space code, so it is passed as ``subnet`` (see
    :func:`nas_aug.nni.load_nni_subnet`).

    >>> export_format("out", "keras")
    Traceback (most recent call last):
    ...
    ValueError: unknown format 'keras'; choose one of ['onnx', 'pt2', 'timm', 'torchscript']
    """
    filename, write, run = FORMATS.get(fmt)
    arch = load_architecture(directory)
    net = (build_subnet(arch) if subnet is None else subnet).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, *arch.input_shape, generator=generator)
    check = torch.rand(3, *arch.input_shape, generator=generator)
    path = Path(arch.directory) / filename
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
        try:
            if not (fmt == "timm" and arch.space is None):  # else net was built from the file
                atomic_write(path, lambda tmp: write(net, example, tmp))
                add_to_manifest(path)  # the next export into this folder replaces it too
        except Exception as err:
            raise RuntimeError(f"this sub-network cannot be exported to {fmt}: {err}") from err
        expected = net(check)
        difference = (run(path, check) - expected).abs().max().item()
    tolerance = atol * max(1.0, expected.abs().max().item())
    if difference > tolerance:
        raise RuntimeError(f"{path} gives outputs {difference:.3g} away from the PyTorch "
                           f"sub-network's (tolerance {tolerance:.3g})")
    return path, difference
