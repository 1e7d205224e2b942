"""Take an exported sub-network anywhere: TorchScript, ONNX and ``torch.export`` files that
run without nas_aug, each checked numerically against the PyTorch sub-network when written."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .export import atomic_write, build_subnet, load_architecture
from .space.choice import closest_match


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


FORMATS: dict[str, tuple[str, Callable, Callable]] = {
    "torchscript": ("subnet.torchscript.pt", _write_torchscript, _run_torchscript),
    "onnx": ("subnet.onnx", _write_onnx, _run_onnx),
    "pt2": ("subnet.pt2", _write_pt2, _run_pt2),
}


def export_format(directory: str | os.PathLike, fmt: str, atol: float = 1e-4
                  ) -> tuple[Path, float]:
    """Write the sub-network exported in ``directory`` as ``fmt`` ("torchscript", "onnx" or
    "pt2" for ``torch.export``) beside it; return the file and the largest absolute difference
    between its outputs and the PyTorch sub-network's on a batch of another size than the one
    traced (so a fixed batch size cannot pass unnoticed). A difference above ``atol`` raises.

    >>> export_format("out", "keras")
    Traceback (most recent call last):
    ...
    ValueError: unknown format 'keras'; choose one of ['onnx', 'pt2', 'torchscript']
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}{closest_match(fmt, FORMATS)}; "
                         f"choose one of {sorted(FORMATS)}")
    filename, write, run = FORMATS[fmt]
    arch = load_architecture(directory)
    net = build_subnet(arch).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, *arch.input_shape, generator=generator)
    check = torch.rand(3, *arch.input_shape, generator=generator)
    path = Path(arch.directory) / filename
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
        try:
            atomic_write(path, lambda tmp: write(net, example, tmp))
        except Exception as err:
            raise RuntimeError(f"this sub-network cannot be exported to {fmt}: {err}") from err
        difference = (run(path, check) - net(check)).abs().max().item()
    if difference > atol:
        raise RuntimeError(f"{path} gives outputs {difference:.3g} away from the PyTorch "
                           f"sub-network's (tolerance {atol})")
    return path, difference
