"""What to make elastic (:class:`ElasticSpec`), and what was made elastic
(:class:`ElasticReport`)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ElasticSpec:
    """The elastic dimensions :func:`~nas_aug.elastic_models.elasticize` adds to a model.

    * ``width``: fractions in (0, 1] of each block's inner (expanded / bottleneck) channels;
      1.0 (the original width) is always a candidate, and ratios that round (to a multiple
      of ``divisor``, as timm's ``make_divisible``) to the same channel count are merged.
    * ``kernel``: odd kernel sizes for depthwise convs, each the centre of the original kernel;
      sizes above a conv's original kernel are left out for that conv (there are no weights to
      grow into), and the original kernel is always a candidate.
    * ``depth``: the blocks of a stage after the first may be skipped (those after any block
      that changes the shape).

    An empty ``width`` / ``kernel`` (or ``depth=False``) turns that dimension off.

    >>> spec = ElasticSpec(width=(1.0, 0.5), kernel=(5, 3))
    >>> spec.width, spec.kernel, spec.depth
    ((0.5, 1.0), (3, 5), True)
    >>> ElasticSpec(width=(0.5, 1.5))
    Traceback (most recent call last):
    ...
    ValueError: ElasticSpec width 1.5 is not in (0, 1]: widths are fractions of ...
    """

    width: tuple[float, ...] = (0.5, 0.75, 1.0)
    kernel: tuple[int, ...] = (3, 5)
    depth: bool = True
    divisor: int = 8

    def __post_init__(self) -> None:
        for name in ("width", "kernel"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"ElasticSpec {name} must be a tuple of values, got {value!r}")
        for w in self.width:
            if not (isinstance(w, numbers.Real) and not isinstance(w, bool) and 0 < w <= 1):
                raise ValueError(f"ElasticSpec width {w!r} is not in (0, 1]: widths are "
                                 "fractions of each block's inner channels, e.g. "
                                 "(0.5, 0.75, 1.0)")
        for k in self.kernel:
            if not (isinstance(k, numbers.Integral) and not isinstance(k, bool) and k > 0
                    and k % 2 == 1):
                raise ValueError(f"ElasticSpec kernel {k!r} is not an odd positive integer: "
                                 "smaller kernels are centre crops of the largest, e.g. (3, 5)")
        if not isinstance(self.depth, bool):
            raise ValueError(f"ElasticSpec depth must be True or False, got {self.depth!r}")
        if not (isinstance(self.divisor, numbers.Integral) and not isinstance(self.divisor, bool)
                and self.divisor >= 1):
            raise ValueError(f"ElasticSpec divisor must be an integer >= 1, got {self.divisor!r}")
        object.__setattr__(self, "width", tuple(sorted({float(w) for w in self.width})))
        object.__setattr__(self, "kernel", tuple(sorted({int(k) for k in self.kernel})))


@dataclass
class ElasticReport:
    """What :func:`~nas_aug.elastic_models.elasticize` did: the modules made elastic with the
    labels each reads, and the modules left as they were with the reason.

    >>> report = ElasticReport("MobileNetV3", elastic={"blocks.1.0": ("blocks.1.0.width",)},
    ...                        skipped={"blocks.2.0": "width: conv_dw has dilation (2, 2)"})
    >>> report.labels
    ('blocks.1.0.width',)
    >>> print(report)
    MobileNetV3: 1 module(s) made elastic (1 label(s)); left as they were: blocks.2.0 (width: ...)
    """

    model: str
    elastic: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label once (a ResNet's ``width`` is read by all its Bottlenecks)."""
        return tuple(dict.fromkeys(label for labels in self.elastic.values()
                                   for label in labels))

    def __str__(self) -> str:
        text = (f"{self.model}: {len(self.elastic)} module(s) made elastic "
                f"({len(self.labels)} label(s))")
        if self.skipped:
            text += "; left as they were: " + "; ".join(f"{name} ({why})"
                                                        for name, why in self.skipped.items())
        return text

