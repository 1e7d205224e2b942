"""The export: ``architecture.json`` + the sub-network's weights + every candidate + a report,
and the sidecars of the integrations it concerns (:mod:`nas_aug.sidecars`: ``timm.json``,
timm's definition of a timm sub-network; ``nni_samples.json``, NNI's samples of a converted
NNI space).

Nothing here is a pickle: the architecture is JSON, the weights are safetensors. A user
rebuilds the standalone sub-network with :func:`load_architecture` and :func:`build_subnet`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .constraints import Budget
from .io import (
    check_unchanged,
    json_path,
    read_tagged_json,
    refuse_held,
    write_file_set,
    write_json,
)
from .result import SearchResult
from .sidecars import SIDECARS
from .supernet import SupernetInfo, device_of, extract_subnet, supernet_info
from .validation import check_json_fields

FORMAT = "nas_aug.architecture/1"
ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "subnet.safetensors"
CANDIDATES_FILE = "candidates.json"


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
    precision: str | None = None  # Lightning's, that the score was measured under
    costs_cover: str | None = None  # what the costs leave out (layers around the supernet)
    arch_string: str | None = None  # the space's own notation (NAS-Bench-201's arch string)
    weights: str | None = WEIGHTS_FILE
    origin: str = "custom"  # the supernet's (SupernetInfo): catalogue, timm, nni or custom
    model_class: str | None = None  # the supernet's class (its qualified name)
    directory: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, **asdict(self)}
        data["input_shape"] = list(self.input_shape)
        del data["directory"]
        return data


def export_files() -> tuple[str, ...]:
    """The names of every file an export may write (the sidecars of the integrations loaded
    included); ``manifest.json`` lists those an export wrote."""
    from .report import PARETO_FILE, PROGRESS_FILE, REPORT_FILE

    return (ARCHITECTURE_FILE, WEIGHTS_FILE, CANDIDATES_FILE, REPORT_FILE, PARETO_FILE,
            PROGRESS_FILE, *(SIDECARS.get(name).filename for name in SIDECARS))


def check_export_dir(directory: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse a directory that holds a file an export writes, unless ``overwrite``."""
    refuse_held(directory, export_files(), overwrite)


def export_architecture(directory: str | os.PathLike, supernet: nn.Module,
                        result: SearchResult, overwrite: bool = False) -> Architecture:
    """Extract ``result``'s chosen sample from ``supernet`` and write the export as one
    transaction (:func:`nas_aug.io.write_file_set`): the architecture, its weights, every
    scored candidate, the report with its plots, and the sidecars. A directory that holds
    any of these files is refused unless ``overwrite``; no other file in it is touched."""
    from safetensors.torch import save_file

    from .report import write_report

    directory = Path(directory)
    weight = next(supernet.parameters(), None)
    example = torch.zeros(1, *result.input_shape,
                          dtype=torch.float32 if weight is None else weight.dtype)
    subnet = extract_subnet(supernet, result.sample, example)
    chosen, info = result.chosen, supernet_info(supernet) or SupernetInfo()
    if info.space_name is None and "timm" in sys.modules:  # no timm model without timm
        from .elastic_models.timm_export import timm_part

        # the timm model alone, under timm's names, if running it is all the sub-network does
        subnet = timm_part(subnet, example.to(device_of(subnet)))
    notation = getattr(supernet, "arch_string", None)  # a space with a published notation
    arch = Architecture(
        space=info.space_name, space_kwargs=dict(info.space_kwargs), origin=info.origin,
        sample=dict(result.sample), input_shape=tuple(result.input_shape), macs=chosen.macs,
        params=chosen.params, latency_ms=chosen.latency_ms, score=chosen.score,
        budget=_limits(result.budget),
        top=[c.to_json() for c in result.top], search_cost=dict(result.cost),
        strategy=result.strategy, probabilities=dict(result.probabilities or {}),
        note=result.note, precision=result.precision, costs_cover=result.costs_cover,
        arch_string=notation(result.sample) if notation is not None else None,
        model_class=type(supernet).__qualname__, directory=directory)
    state = {k: v.detach().cpu().contiguous() for k, v in subnet.state_dict().items()}
    candidates = [c.to_json() for c in result.candidates]

    def write(folder: Path) -> None:
        save_file(state, str(folder / WEIGHTS_FILE))
        for name in SIDECARS:
            SIDECARS.get(name).write(folder, supernet, subnet, result)
        write_json(folder / ARCHITECTURE_FILE, arch.to_json())
        if candidates:
            write_json(folder / CANDIDATES_FILE, candidates, indent=1)
        write_report(folder, arch, candidates, supernet)

    write_file_set(directory, write, export_files(), overwrite)
    return arch


def _limits(budget: Budget | None) -> dict[str, Any]:
    """The limits a budget sets, as JSON data (none for no budget)."""
    return {} if budget is None else {k: v for k, v in asdict(budget).items() if v is not None}


def load_timm(path: str | os.PathLike, weights: str | None = WEIGHTS_FILE) -> nn.Module:
    """The timm model of an export: ``timm.json`` (or the directory holding it) built by
    timm (the class it names, ``decode_arch_def`` for block strings, its norm, activation and
    squeeze-excite layers), with the weights file ``weights`` beside it loaded strictly under
    timm's own names, unless ``weights`` is ``None``. The README shows the same in plain timm.

    >>> load_timm("no/such/export")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no timm definition at 'no/such/export/timm.json'
    """
    from .elastic_models.timm_export import TIMM_FILE, TIMM_FORMAT, build_timm, timm_weights

    check_unchanged(json_path(path, TIMM_FILE))
    path, definition = read_tagged_json(path, TIMM_FILE, TIMM_FORMAT, "timm definition")
    try:
        net = build_timm(definition)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: timm cannot build the model it defines ({type(err).__name__}"
                         f": {err})") from None
    if weights is not None:
        file = path.parent / weights
        _load_state(net, timm_weights(load_weights(file), definition), file, path)
    return net


def load_architecture(path: str | os.PathLike) -> Architecture:
    """Read ``architecture.json`` (or the directory holding it).

    >>> load_architecture("no/such/dir")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no architecture at 'no/such/dir/architecture.json'
    """
    check_unchanged(json_path(path, ARCHITECTURE_FILE))  # first: it finishes a pending export
    path, data = read_tagged_json(path, ARCHITECTURE_FILE, FORMAT, "architecture")
    names = {f.name for f in fields(Architecture)} - {"directory"}
    required = {f.name for f in fields(Architecture) if f.default is MISSING
                and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
    if missing or unknown:
        raise ValueError(f"{path}: missing fields {missing}, unknown fields {unknown}; "
                         f"an architecture has {sorted(names)}")
    check_json_fields(data, Architecture, str(path))
    if not data["input_shape"] or min(data["input_shape"]) < 1:
        raise ValueError(f"{path}: field 'input_shape' must list positive sizes (channels, "
                         f"height, width), got {data['input_shape']}")
    data["input_shape"] = tuple(data["input_shape"])
    return Architecture(**data, directory=path.parent)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path`` of an export, checked against the
    export's manifest; an unreadable file is named with the reason."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {str(path)!r}; rebuild without weights "
                                "(weights=False) or export again")
    check_unchanged(path)
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise ValueError(f"{path} is not a readable safetensors file ({err}); export "
                         "again") from None


def build_subnet(arch: Architecture, weights: bool = True) -> nn.Module:
    """The standalone sub-network of ``arch``: a plain module without choice modules, with
    the exported (trained) weights if ``weights``, else freshly initialised ones. A sub-network
    of a model that is not a registered space (e.g. an elasticized timm model) is rebuilt from
    the export's ``timm.json``, as the timm model alone (without a module that held it)."""
    from .search_spaces import create_space

    if arch.space is None:
        if arch.origin == "nni":
            raise ValueError("this architecture is a sample of an NNI space; your space's code "
                             "builds it: nas_aug.nni.load_nni_subnet(space, export_dir)")
        from .elastic_models.timm_export import TIMM_FILE

        timm_file = None if arch.directory is None else arch.directory / TIMM_FILE
        if timm_file is None or not timm_file.exists():
            raise ValueError("this architecture names no registered space (the supernet was "
                             "not built with nas_aug.search_spaces.create_space) and its export "
                             f"holds no {TIMM_FILE} (written for sub-networks of timm models "
                             "that timm can build), so it cannot be rebuilt")
        if weights and arch.weights is None:
            raise ValueError("this architecture has no weights file; use weights=False")
        return load_timm(timm_file, arch.weights if weights else None)
    try:  # a space, arguments or sample an edited architecture.json names wrongly
        subnet = extract_subnet(create_space(arch.space, **arch.space_kwargs), arch.sample,
                                torch.zeros(1, *arch.input_shape))
    except ValueError as err:
        where = "architecture" if arch.directory is None else arch.directory / ARCHITECTURE_FILE
        raise ValueError(f"{where}: {err}") from None
    if not weights:
        for module in subnet.modules():
            if hasattr(module, "reset_parameters") and module is not subnet:
                module.reset_parameters()
        return subnet
    if arch.weights is None or arch.directory is None:
        raise ValueError("this architecture has no weights file; use weights=False")
    file = arch.directory / arch.weights
    _load_state(subnet, load_weights(file), file, arch.directory / ARCHITECTURE_FILE)
    return subnet


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], weights: Path, of: Path) -> None:
    """Load ``state`` (from the file ``weights``) strictly into ``net`` (built from ``of``)."""
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in {weights} do not fit the network {of} describes "
                         f"(were they exported with it?): {err}") from None
