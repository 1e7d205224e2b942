"""``nasbench201``: the cell space of NAS-Bench-201 (Dong & Yang, ICLR 2020).

A cell is a DAG of ``nodes`` nodes: node 0 is the cell's input, node ``j`` the sum over
``i < j`` of ``op(node i)`` on edge ``edge(j<-i)``, and the last node the cell's output. Every
edge is one :class:`~nas_aug.space.LayerChoice` over the operations :data:`OPS`. The macro
skeleton is NAS-Bench-201's: a 3x3 stem, three stages of ``N`` cells at widths ``C``, ``2C``,
``4C`` joined by residual reduction blocks, then batch norm, ReLU, global pooling and a linear
classifier. As in NAS-Bench-201, all cells share one genotype: the edge ``i -> j`` of every
cell reads the same label, so a sample is 6 choices (4 nodes) and ``5**6 = 15625``
architectures. :func:`arch_string` and :func:`parse_arch_string` convert a sample to and from
NAS-Bench-201's arch strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..space import LayerChoice
from ..supernet import space_of
from ..validation import check_int, closest_match
from ._registry import SearchSpace, register_space

__all__ = ["OPS", "NASBench201", "arch_string", "edge_label", "parse_arch_string"]


class Zero(nn.Module):
    """NAS-Bench-201's ``none``: zeros of the input's shape (no information passes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU, convolution without bias ("same" padding), batch norm: NAS-Bench-201's
    ``ReLUConvBN``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),  # a node feeds several edges: never overwrite it
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2,
                      bias=False),
            nn.BatchNorm2d(out_chs),
        )


# the edge operations, cheapest first: a space's smallest sample is its first candidate on
# every edge (``none``), its largest the last (``nor_conv_3x3``)
_OP_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda C: Zero(),
    "skip_connect": lambda C: nn.Identity(),
    "avg_pool_3x3": lambda C: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    "nor_conv_1x1": lambda C: ReLUConvBN(C, C, 1),
    "nor_conv_3x3": lambda C: ReLUConvBN(C, C, 3),
}
OPS: tuple[str, ...] = tuple(_OP_BUILDERS)


def edge_label(j: int, i: int) -> str:
    """The label of the edge from node ``i`` to node ``j``, as NAS-Bench-201 names it.

    >>> edge_label(2, 1)
    'edge(2<-1)'
    """
    return f"edge({j}<-{i})"


def _edges(nodes: int) -> list[tuple[int, int]]:
    """``(j, i)`` for every edge of a cell of ``nodes`` nodes, in label order."""
    return [(j, i) for j in range(1, nodes) for i in range(j)]


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block: two ``ReLUConvBN`` 3x3 (the first with stride 2)
    plus a shortcut of 2x2 average pooling and a 1x1 convolution."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv_a = ReLUConvBN(in_chs, out_chs, 3, stride=2)
        self.conv_b = ReLUConvBN(out_chs, out_chs, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                        nn.Conv2d(in_chs, out_chs, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Cell(nn.Module):
    """One cell: ``edges[k]`` is the layer choice on the ``k``-th edge of :func:`_edges`."""

    def __init__(self, channels: int, nodes: int, ops: Sequence[str]):
        super().__init__()
        self.pairs = _edges(nodes)
        self.edges = nn.ModuleList(
            LayerChoice(edge_label(j, i), {op: _OP_BUILDERS[op](channels) for op in ops})
            for j, i in self.pairs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states: list[torch.Tensor] = [x]
        terms: list[torch.Tensor] = []
        for (j, i), edge in zip(self.pairs, self.edges):
            terms.append(edge(states[i]))
            if i == j - 1:  # the last input of node j
                total = terms[0]
                for term in terms[1:]:
                    total = total + term
                states.append(total)
                terms = []
        return states[-1]


def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    if isinstance(ops, str) or not isinstance(ops, Sequence) or not ops:
        raise ValueError(f"nasbench201: ops={ops!r} must be a non-empty list of operation "
                         f"names from {list(OPS)}")
    for op in ops:
        if op not in OPS:
            raise ValueError(f"nasbench201: unknown operation {op!r} in ops"
                             f"{closest_match(op, OPS)}; the operations are {list(OPS)}")
    if len(set(ops)) != len(ops):
        raise ValueError(f"nasbench201: ops={list(ops)!r} repeats an operation")
    return tuple(op for op in OPS if op in ops)  # cheapest first, whatever the order given


def _check_int(name: str, value: Any, low: int) -> int:
    try:
        return check_int(name, value, low)
    except ValueError as err:
        raise ValueError(f"nasbench201: {err}") from None


def _nodes_of(sample: Mapping[str, Any]) -> int:
    """The number of nodes whose edge labels are exactly the keys of ``sample``."""
    if not isinstance(sample, Mapping):
        raise ValueError(f"a NAS-Bench-201 sample is a {{'edge(j<-i)': op}} dict, got "
                         f"{type(sample).__name__}")
    nodes = 2
    while len(_edges(nodes)) < len(sample):
        nodes += 1
    expected = [edge_label(j, i) for j, i in _edges(nodes)]
    if set(sample) != set(expected):
        raise ValueError(f"a NAS-Bench-201 sample sets the labels edge(j<-i) of one cell, "
                         f"e.g. {expected}; got {list(sample)}")
    return nodes


def arch_string(sample: Mapping[str, str]) -> str:
    """NAS-Bench-201's arch string of ``sample`` (``{"edge(j<-i)": op}`` for one cell): the
    nodes' inputs ``|op~i|`` in order, nodes joined by ``+``.

    >>> arch_string({"edge(1<-0)": "nor_conv_3x3", "edge(2<-0)": "none",
    ...              "edge(2<-1)": "skip_connect"})
    '|nor_conv_3x3~0|+|none~0|skip_connect~1|'
    """
    nodes = _nodes_of(sample)
    for label, op in sample.items():
        if op not in OPS:
            raise ValueError(f"{label}={op!r} is not a NAS-Bench-201 operation"
                             f"{closest_match(op, OPS)}; the operations are {list(OPS)}")
    return "+".join("|" + "".join(f"{sample[edge_label(j, i)]}~{i}|" for i in range(j))
                    for j in range(1, nodes))


def parse_arch_string(text: str) -> dict[str, str]:
    """The sample of a NAS-Bench-201 arch string (the inverse of :func:`arch_string`);
    ``ValueError`` saying what is wrong with a malformed one.

    >>> parse_arch_string("|nor_conv_3x3~0|+|none~0|skip_connect~1|")
    {'edge(1<-0)': 'nor_conv_3x3', 'edge(2<-0)': 'none', 'edge(2<-1)': 'skip_connect'}
    """
    def fail(why: str) -> ValueError:
        return ValueError(f"malformed NAS-Bench-201 arch string {text!r}: {why}; expected "
                          "e.g. '|nor_conv_3x3~0|+|none~0|skip_connect~1|'")

    if not isinstance(text, str) or not text:
        raise fail("not a non-empty string")
    sample: dict[str, str] = {}
    for j, node in enumerate(text.split("+"), 1):
        if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
            raise fail(f"node {j} ({node!r}) is not of the form |op~i|...|")
        inputs: dict[int, str] = {}
        for token in node[1:-1].split("|"):
            op, tilde, source = token.partition("~")
            if not tilde or not source.isdigit() or int(source) >= j:
                raise fail(f"input {token!r} of node {j} is not op~i with i in 0..{j - 1}")
            if op not in OPS:
                raise fail(f"unknown operation {op!r}{closest_match(op, OPS)}; the operations "
                           f"are {list(OPS)}")
            if int(source) in inputs:
                raise fail(f"node {j} reads node {source} twice")
            inputs[int(source)] = op
        if len(inputs) != j:
            raise fail(f"node {j} has {len(inputs)} inputs, expected one from each of nodes "
                       f"0..{j - 1}")
        sample.update({edge_label(j, i): inputs[i] for i in range(j)})
    return sample


@register_space
class NASBench201(SearchSpace):
    """The ``nasbench201`` supernet: NAS-Bench-201's skeleton with one shared cell genotype
    (see the module docstring). ``create_space("nasbench201", **kw)`` and
    ``NASBench201(**kw)`` (or a config's ``class_path: nas_aug.search_spaces.NASBench201``)
    build the same supernet.

    Args:
        C: channels of the first stage (the stages have ``C``, ``2C``, ``4C``).
        N: cells per stage.
        in_chans: input channels.
        num_classes: outputs of the classifier.
        img_size: input height and width, a multiple of 4 (two reductions halve it).
        nodes: nodes per cell, at least 2 (``nodes * (nodes - 1) / 2`` edges).
        ops: the operations each edge chooses from, a subset of :data:`OPS`; they are kept in
            :data:`OPS`'s order (cheapest first) whatever the order given, so the smallest
            sample is the first of them on every edge and the largest the last.

    >>> from nas_aug.search_spaces import create_space
    >>> from nas_aug.supernet import activate, space_of
    >>> net = create_space("nasbench201", C=8, N=1, in_chans=1, img_size=8)
    >>> space = space_of(net)
    >>> space.labels
    ('edge(1<-0)', 'edge(2<-0)', 'edge(2<-1)', 'edge(3<-0)', 'edge(3<-1)', 'edge(3<-2)')
    >>> space.candidates("edge(1<-0)")
    ('none', 'skip_connect', 'avg_pool_3x3', 'nor_conv_1x1', 'nor_conv_3x3')
    >>> sample = net.parse_arch_string(
    ...     "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    ...     "skip_connect~2|")
    >>> sample["edge(2<-1)"], sample["edge(3<-0)"]
    ('avg_pool_3x3', 'skip_connect')
    >>> _ = activate(net, sample)
    >>> net.eval()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> net.arch_string(space.smallest())
    '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|'
    """

    name = "nasbench201"

    def __init__(self, C: int = 16, N: int = 5, in_chans: int = 3, num_classes: int = 10,
                 img_size: int = 32, nodes: int = 4, ops: Sequence[str] = OPS):
        super().__init__()
        C, N = _check_int("C", C, 1), _check_int("N", N, 1)
        in_chans, num_classes = _check_int("in_chans", in_chans, 1), \
            _check_int("num_classes", num_classes, 1)
        nodes = _check_int("nodes", nodes, 2)
        if _check_int("img_size", img_size, 4) % 4:
            raise ValueError(f"nasbench201: img_size={img_size} must be a multiple of 4 (the "
                             "two reduction blocks halve it)")
        ops = _check_ops(ops)
        self.default_input_shape = (in_chans, img_size, img_size)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(ResNetBasicBlock(width // 2, width))
            layers.extend(Cell(width, nodes, ops) for _ in range(N))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                  nn.Linear(4 * C, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cells(self.stem(x)))

    def arch_string(self, sample: Mapping[str, str]) -> str:
        """:func:`arch_string` of ``sample``, once validated against this space."""
        return arch_string(space_of(self).validate(sample))

    def parse_arch_string(self, text: str) -> dict[str, str]:
        """:func:`parse_arch_string` of ``text``, validated against this space (its nodes and
        operations)."""
        return space_of(self).validate(parse_arch_string(text))
