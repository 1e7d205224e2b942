"""``elasticize``: find the blocks of the registered families in any model and make them
elastic."""

from __future__ import annotations

import warnings

from torch import nn

from ..space import ElasticDepth
from ..supernet import SupernetInfo, mark_supernet, space_of
from .family import families
from .spec import ElasticReport, ElasticSpec


def _looked_for() -> str:
    return "; ".join(f"{family.name}: {', '.join(t.__name__ for t in family.blocks)}"
                     for family in families())


def _label(name: str, what: str) -> str:
    return f"{name}.{what}" if name else what


def elasticize(model: nn.Module, spec: ElasticSpec | None = None) -> ElasticReport:
    """Turn ``model`` into a weight-sharing supernet in place: the blocks of the registered
    families (timm's MobileNetV3 / EfficientNet and ResNet), anywhere inside ``model`` (e.g. a
    LightningModule holding one), get elastic widths and kernels, and their stages elastic
    depths, as ``spec`` asks (:class:`ElasticSpec`). Every elastic layer keeps the original
    weights, and the largest sample (the default active one) is exactly the original model.

    Labels are module names: ``"<block>.width"`` (a ratio of the inner channels; a ResNet has
    one ``"width"`` for all its Bottlenecks), ``"<block>.kernel"``, ``"<stage>.depth"``. Only
    widths timm can build are offered, so every sample exports back to timm; ``model`` gets a
    :class:`~nas_aug.supernet.SupernetInfo` of origin ``"timm"``. Returns an
    :class:`ElasticReport`; the modules
    left as they were are also listed in a warning. ``ValueError`` if nothing can be made
    elastic (the model is then unchanged) or ``model`` already holds choice modules.

    >>> import timm, torch
    >>> from nas_aug.supernet import space_of
    >>> net = timm.create_model("mobilenetv3_small_050", num_classes=3)
    >>> report = elasticize(net, ElasticSpec(width=(0.5, 1.0)))
    >>> report.labels[:3]
    ('blocks.1.0.width', 'blocks.1.1.width', 'blocks.2.0.width')
    >>> space_of(net).candidates("blocks.2.depth")
    (1, 2, 3)
    """
    spec = ElasticSpec() if spec is None else spec
    if not isinstance(spec, ElasticSpec):
        raise ValueError(f"spec must be a nas_aug.ElasticSpec, got {spec!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"elasticize takes a torch nn.Module, got {type(model).__name__}")
    existing = space_of(model).labels
    if existing:
        raise ValueError(f"{type(model).__name__} already holds choice modules (labels "
                         f"{list(existing)[:4]}...): elasticize a plain model, once")
    rules = {t: rule for family in families() for t, rule in family.blocks.items()}
    unsupported = {t: why for family in families() for t, why in family.unsupported.items()}
    report = ElasticReport(type(model).__name__)
    modules = list(model.named_modules())
    stages = [(name, module) for name, module in modules if type(module) is nn.Sequential
              and any(type(c) in rules or type(c) in unsupported for c in module.children())]
    keeps_shape = {name: [type(c) in rules and rules[type(c)].keeps_shape(c)
                          for c in stage.children()] for name, stage in stages}

    for name, module in modules:
        if type(module) in rules:
            labels, problems = rules[type(module)].convert(name, module, spec)
            if labels:
                report.elastic[name] = tuple(labels)
            if problems:
                report.skipped[name] = f"{type(module).__name__}: {'; '.join(problems)}"
        elif type(module) in unsupported:
            report.skipped[name] = f"{type(module).__name__}: {unsupported[type(module)]}"
    for name, stage in stages:
        for child_name, child in stage.named_children():
            if type(child) not in rules and type(child) not in unsupported:
                report.skipped[_label(name, child_name)] = (
                    f"{type(child).__name__}: not a block of a family elasticize converts")
        _make_deep(model, name, stage, keeps_shape[name], spec, report)

    if not report.elastic:
        skipped = "; left as they were: " + "; ".join(
            f"{n} ({why})" for n, why in report.skipped.items()) if report.skipped else ""
        raise ValueError(f"elasticize found no layer it can make elastic in "
                         f"{type(model).__name__} under {spec}: it looks for the blocks of "
                         f"timm's {_looked_for()}{skipped}")
    mark_supernet(model, SupernetInfo(origin="timm"))
    if report.skipped:
        warnings.warn(f"elasticize left {len(report.skipped)} module(s) of "
                      f"{report.model} as they were: "
                      + "; ".join(f"{n} ({why})" for n, why in report.skipped.items()),
                      stacklevel=2)
    return report


def _make_deep(model: nn.Module, name: str, stage: nn.Sequential, keeps_shape: list[bool],
               spec: ElasticSpec, report: ElasticReport) -> None:
    """Replace ``stage`` by an elastic depth over its blocks; those up to the last one after
    the first that changes the shape always run."""
    blocks = list(stage.children())
    if not spec.depth or len(blocks) < 2:
        return
    min_depth = max([1] + [i + 1 for i, keeps in enumerate(keeps_shape) if i > 0 and not keeps])
    if min_depth == len(blocks):
        report.skipped[name] = (f"depth: its last block ({type(blocks[-1]).__name__}) is not "
                                "known to keep its input's shape, so it cannot be skipped")
        return
    if not name:
        report.skipped[name] = "depth: the model itself is the stage (wrap it in a module)"
        return
    parent_name, _, attribute = name.rpartition(".")
    depth = ElasticDepth(_label(name, "depth"), blocks, min_depth=min_depth).train(stage.training)
    setattr(model.get_submodule(parent_name), attribute, depth)
    report.elastic[name] = (depth.choice.label,)
