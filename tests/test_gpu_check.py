"""benchmarks/gpu_check.py in its CPU smoke setting (``--device cpu --tiny``): every section
written, its numbers parsing, on digits and a generated stand-in for Fashion-MNIST."""

import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_check
from benchmarks.bench_augment import POLICIES
from nas_aug.strategies import SAMPLINGS, STRATEGIES


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as an idx file."""
    dims = b"".join(int(side).to_bytes(4, "big") for side in array.shape)
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + dims + array.tobytes())


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    """Noise images in Fashion-MNIST's four idx files, at its full size (the tiny setting takes
    shares of 60000 and 10000 images)."""
    root = tmp_path_factory.mktemp("fashion-mnist")
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 60000), ("t10k", 10000)):
        write_idx(root / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", (np.arange(count) % 10).astype(np.uint8))
    return root


def section(text: str, number: int) -> str:
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"section {number} missing"
    return match.group(0)


def table(text: str) -> list[list[str]]:
    """The cells of a section's table rows (header and rule left out)."""
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix("×"))


def test_tiny_cpu_run_writes_every_section(tmp_path, fashion_root):
    out = tmp_path / "gpu_check.md"
    gpu_check.main([str(out), "--device", "cpu", "--tiny", "--root", str(fashion_root)])
    text = out.read_text()
    assert "setting: tiny" in text and "Failed" not in text
    assert re.search(r"elapsed \*\*\d+ s\*\*", text)

    throughput = table(section(text, 1))
    assert [(row[0], row[1]) for row in throughput] == [
        (name, dtype) for name in POLICIES for dtype in ("float32", "bfloat16")]
    for _, _, ours, kornia, ratio in throughput:
        if ratio != "-":  # both ran: the ratio is theirs
            assert number(ratio) == pytest.approx(number(ours) / number(kornia), rel=0.01)
        else:
            assert "n/a (" in ours + kornia

    digits = table(section(text, 2))
    assert [row[0] for row in digits] == ["uniform", "sandwich"]
    for row in digits:
        assert number(row[4]) > 0 and 0 <= number(row[5]) <= 1
        assert row[7] == "cpu" and row[8].endswith(" ok") and number(row[8].split()[0]) < 1e-3
        assert " Wh by " in row[9]

    policies = table(section(text, 3))
    assert [row[0] for row in policies] == ["dada", "randaugment"]
    for _, seconds, found, heldout, test in policies:
        assert number(seconds) > 0 and found
        assert 0 <= number(heldout) <= 1 and 0 <= number(test) <= 1

    strategies = table(section(text, 4))
    expected = [f"spos ({sampling})" if name == "spos" else name
                for name in STRATEGIES.names()
                for sampling in (SAMPLINGS.names() if name == "spos" else [None])]
    assert sorted(row[0] for row in strategies) == sorted(expected)
    assert {"spos (uniform)", "spos (sandwich)", "darts", "gdas", "proxyless"} <= set(expected)
    for _, supernet, alone, ratio, steps, _, macs, score in strategies:
        assert number(supernet) > 0 and number(alone) > 0 and number(steps) >= 2
        assert number(ratio) == pytest.approx(number(supernet) / number(alone), rel=0.02)
        assert number(macs) <= 3_000_000 and 0 <= number(score) <= 1


def test_missing_fashion_mnist_skips_its_sections(tmp_path):
    out = tmp_path / "gpu_check.md"
    gpu_check.main([str(out), "--device", "cpu", "--tiny", "--root", str(tmp_path / "none"),
                    "--sections", "policy,nas"])
    text = out.read_text()
    for number_ in (3, 4):
        assert "Skipped: Fashion-MNIST is missing. Fashion-MNIST not found in" in \
            section(text, number_)
    assert "## 1." not in text


def test_refuses_a_cpu_run_over_the_gpu_table():
    with pytest.raises(SystemExit):
        gpu_check.main([str(gpu_check.DEFAULT_OUT), "--device", "cpu", "--tiny"])
