"""The README's Python examples run as written (the training one shrunk to a few steps)."""

import re
from pathlib import Path

import torch
from timm.models import MobileNetV3
from torch import nn

README = Path(__file__).parents[1] / "README.md"
SHRINK = {  # README text -> the same call with fewer steps
    "max_epochs=3": "max_epochs=1, limit_train_batches=2, enable_progress_bar=False",
    "max_epochs=2": "max_epochs=1, limit_train_batches=2, enable_progress_bar=False",
    "max_epochs=5": "max_epochs=1, limit_train_batches=2, enable_progress_bar=False",
    "max_epochs=4": "max_epochs=1, limit_train_batches=2, enable_progress_bar=False",
    "overwrite=True)": "overwrite=True, population_size=4, generations=2, progress=False)",
    'export_dir="out_timm", overwrite=True, seed=0)':
        'export_dir="out_timm", overwrite=True, seed=0, population_size=4, generations=2, '
        'calibration_batches=2, progress=False)',
}


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S))
    for text, shrunk in SHRINK.items():
        assert code.count(text) == 1, f"the README example no longer contains {text!r}"
        code = code.replace(text, shrunk)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "out" / "architecture.json").exists()
    assert namespace["arch"].macs <= 600_000
    assert (tmp_path / "out_nni" / "nni_samples.json").exists()
    assert type(namespace["subnet"]).__name__ == "NNINet"  # NNI's own frozen network
    assert "['mobilenet_tiny', 'nasbench201']" in capsys.readouterr().out
    assert namespace["images"].shape == (8, 3, 32, 32)
    assert namespace["policy"].name == "dada" and namespace["unsupported"] == ["equalize"]
    # the elasticize example prints what its comment says
    assert namespace["report"].labels[:4] == ("blocks.1.0.width", "blocks.1.1.width",
                                              "blocks.2.0.width", "blocks.2.0.kernel")
    # the searched timm sub-network: nas_aug's load_timm and the plain-timm lines rebuild the
    # winner the fit left active, with equal outputs (the gate, norms and weights all exact)
    x = torch.randn(4, 1, 8, 8)
    winner = namespace["mobilenet"].eval()
    for rebuilt in (namespace["searched"], namespace["plain"]):
        assert type(rebuilt) is MobileNetV3
        torch.testing.assert_close(rebuilt.eval()(x), winner(x), rtol=0, atol=1e-5)
    assert any(isinstance(m, nn.Hardsigmoid) for m in namespace["plain"].modules())
