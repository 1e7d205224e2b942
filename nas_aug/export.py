"""The export: ``architecture.json`` + the sub-network's weights + every candidate + a report,
``timm.json`` (timm's definition of the sub-network) when it is a timm model timm can build,
and ``nni_samples.json`` (the chosen and top samples as NNI's ``{label: value}`` dicts) when
the supernet is an NNI space converted by :func:`nas_aug.nni.from_nni`.

Nothing here is a pickle: the architecture is JSON, the weights are safetensors. A user
rebuilds the standalone sub-network with :func:`load_architecture` and :func:`build_subnet`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .constraints import Budget
from .io import atomic_write, read_tagged_json, write_json
from .result import SearchResult
from .supernet import extract_subnet

FORMAT = "nas_aug.architecture/1"
ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "subnet.safetensors"
CANDIDATES_FILE = "candidates.json"
TIMM_FILE = "timm.json"
NNI_SAMPLES_FILE = "nni_samples.json"


@dataclass(frozen=True)
class Architecture:
    """One searched architecture, as written to ``architecture.json``.

    >>> arch = Architecture(space="mobilenet_tiny", space_kwargs={"in_chans": 1, "img_size": 8},
    ...                     sample={}, input_shape=(1, 8, 8))
    >>> arch.space
    'mobilenet_tiny'
    """

    space: str | None
    space_kwargs: dict[str, Any]
    sample: dict[str, Any]
    input_shape: tuple[int, ...]
    macs: int | None = None
    params: int | None = None
    latency_ms: float | None = None  # measured on the fit's device (a latency budget's table)
    score: float | None = None
    metric: str = "heldout_top1"
    budget: dict[str, Any] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)
    search_cost: dict[str, Any] = field(default_factory=dict)
    strategy: str = "spos"
    probabilities: dict[str, Any] = field(default_factory=dict)  # gradient strategies: softmax
    note: str | None = None
    weights: str | None = WEIGHTS_FILE
    directory: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, **asdict(self)}
        data["input_shape"] = list(self.input_shape)
        del data["directory"]
        return data


def check_export_dir(directory: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse a directory that already holds an export, unless ``overwrite``."""
    existing = Path(directory) / ARCHITECTURE_FILE
    if existing.exists() and not overwrite:
        raise FileExistsError(
            f"export directory {str(directory)!r} already holds a result ({existing}); choose "
            "another directory or pass overwrite=True to replace it")


def export_architecture(directory: str | os.PathLike, supernet: nn.Module,
                        result: SearchResult) -> Architecture:
    """Extract ``result``'s chosen sample from ``supernet`` and write the export files
    (atomically): the architecture, its weights, every scored candidate, and the report with
    its plots."""
    from safetensors.torch import save_file

    from .report import write_report

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weight = next(supernet.parameters(), None)
    example = torch.zeros(1, *result.input_shape,
                          dtype=torch.float32 if weight is None else weight.dtype)
    subnet = extract_subnet(supernet, result.sample, example)
    chosen = result.chosen
    arch = Architecture(
        space=getattr(supernet, "space_name", None),
        space_kwargs=dict(getattr(supernet, "space_kwargs", {})),
        sample=dict(result.sample), input_shape=tuple(result.input_shape), macs=chosen.macs,
        params=chosen.params, latency_ms=chosen.latency_ms, score=chosen.score,
        budget=_limits(result.budget),
        top=[c.to_json() for c in result.top], search_cost=dict(result.cost),
        strategy=result.strategy, probabilities=dict(result.probabilities or {}),
        note=result.note, directory=directory)
    state = {k: v.detach().cpu().contiguous() for k, v in subnet.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    _write_timm(directory, subnet, result.input_shape)
    _write_nni_samples(directory, supernet, [result.sample, *(c.sample for c in result.top)])
    write_json(directory / ARCHITECTURE_FILE, arch.to_json())
    candidates = [c.to_json() for c in result.candidates]
    if candidates:
        write_json(directory / CANDIDATES_FILE, candidates, indent=1)
    write_report(directory, arch, candidates)
    return arch


def _limits(budget: Budget | None) -> dict[str, Any]:
    """The limits a budget sets, as JSON data (none for no budget)."""
    return {} if budget is None else {k: v for k, v in asdict(budget).items() if v is not None}


def _write_timm(directory: Path, subnet: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Write ``timm.json`` if ``subnet`` is (or runs) a timm MobileNetV3 / EfficientNet /
    ResNet that timm can build, checked on a batch; else remove a stale one, and warn why when
    ``subnet`` holds a timm model of those classes."""
    from .elastic_models.timm_export import MODELS, check_timm, timm_definition

    path = directory / TIMM_FILE
    path.unlink(missing_ok=True)
    if not any(type(m) in MODELS.values() for m in subnet.modules()):
        return
    weight = next(subnet.parameters())
    inputs = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    try:
        definition = timm_definition(subnet)
        difference = check_timm(subnet, definition, inputs.to(weight.device, weight.dtype))
    except ValueError as err:
        warnings.warn(f"no {TIMM_FILE} in {directory}: {err}", stacklevel=3)
        return
    if difference > 1e-4:
        warnings.warn(f"no {TIMM_FILE} in {directory}: timm's build of the sub-network gives "
                      f"outputs {difference:.3g} away from it", stacklevel=3)
        return
    write_json(path, definition)


def _write_nni_samples(directory: Path, supernet: nn.Module, samples: list[Mapping]) -> None:
    """Write ``nni_samples.json`` (the distinct ``samples``, in order, restricted to the NNI
    space's labels) if ``supernet`` is a converted NNI space; else remove a stale one."""
    path = directory / NNI_SAMPLES_FILE
    path.unlink(missing_ok=True)
    labels = getattr(supernet, "nni_labels", None)
    if labels is None:
        return
    distinct: list[dict[str, Any]] = []
    for sample in samples:
        nni_sample = {label: sample[label] for label in labels}
        if nni_sample not in distinct:
            distinct.append(nni_sample)
    write_json(path, distinct, indent=1)


def load_timm(path: str | os.PathLike, weights: str | None = WEIGHTS_FILE) -> nn.Module:
    """The timm model of ``timm.json`` (or the directory holding it), with the weights file
    ``weights`` beside it loaded (strict) unless ``weights`` is ``None``."""
    from safetensors.torch import load_file

    from .elastic_models.timm_export import TIMM_FORMAT, build_timm, timm_weights

    path, definition = read_tagged_json(path, TIMM_FILE, TIMM_FORMAT, "timm definition")
    net = build_timm(definition)
    if weights is not None:
        net.load_state_dict(timm_weights(load_file(str(path.parent / weights)), definition))
    return net


def load_architecture(path: str | os.PathLike) -> Architecture:
    """Read ``architecture.json`` (or the directory holding it).

    >>> load_architecture("no/such/dir")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no architecture at 'no/such/dir/architecture.json'
    """
    path, data = read_tagged_json(path, ARCHITECTURE_FILE, FORMAT, "architecture")
    names = {f.name for f in fields(Architecture)} - {"directory"}
    required = {f.name for f in fields(Architecture) if f.default is MISSING
                and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
    if missing or unknown:
        raise ValueError(f"{path}: missing fields {missing}, unknown fields {unknown}; "
                         f"an architecture has {sorted(names)}")
    data["input_shape"] = tuple(data["input_shape"])
    return Architecture(**data, directory=path.parent)


def build_subnet(arch: Architecture, weights: bool = True) -> nn.Module:
    """The standalone sub-network of ``arch``: a plain module without choice modules, with
    the exported (trained) weights if ``weights``, else freshly initialised ones. A sub-network
    of a model that is not a registered space (e.g. an elasticized timm model) is rebuilt from
    the export's ``timm.json``, as the timm model alone (without a module that held it)."""
    from safetensors.torch import load_file

    from .search_spaces import create_space

    if arch.space is None:
        timm_file = None if arch.directory is None else arch.directory / TIMM_FILE
        if arch.directory is not None and (arch.directory / NNI_SAMPLES_FILE).exists():
            raise ValueError("this architecture is a sample of an NNI space; your space's code "
                             "builds it: nas_aug.nni.load_nni_subnet(space, export_dir)")
        if timm_file is None or not timm_file.exists():
            raise ValueError("this architecture names no registered space (the supernet was "
                             "not built with nas_aug.search_spaces.create_space) and its export "
                             f"holds no {TIMM_FILE} (written for sub-networks of timm models "
                             "that timm can build), so it cannot be rebuilt")
        if weights and arch.weights is None:
            raise ValueError("this architecture has no weights file; use weights=False")
        return load_timm(timm_file, arch.weights if weights else None)
    subnet = extract_subnet(create_space(arch.space, **arch.space_kwargs), arch.sample,
                            torch.zeros(1, *arch.input_shape))
    if not weights:
        for module in subnet.modules():
            if hasattr(module, "reset_parameters") and module is not subnet:
                module.reset_parameters()
        return subnet
    if arch.weights is None or arch.directory is None:
        raise ValueError("this architecture has no weights file; use weights=False")
    subnet.load_state_dict(load_file(str(arch.directory / arch.weights)))
    return subnet
