"""GPU check (run on a lent GPU machine): OneShotNAS inside a CUDA fit, export parity, NVML
energy reading. Writes a short markdown summary to the path given as the first argument."""

import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from nas_aug import Budget, build_subnet, load_architecture
from nas_aug.callbacks import OneShotNAS
from nas_aug.data import DigitsDataModule
from nas_aug.search_spaces import create_space


class LitClassifier(pl.LightningModule):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main(out: Path) -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    lines = [f"# GPU check: {torch.cuda.get_device_name()} (torch {torch.__version__})", ""]
    for sampling in ("uniform", "sandwich"):
        pl.seed_everything(0)
        model = LitClassifier(create_space("mobilenet_tiny", num_classes=10, in_chans=1,
                                           img_size=8, kernel_sizes=(3, 5)))
        export = out.parent / f"export_{sampling}"
        nas = OneShotNAS(budget=Budget(macs=600_000), export_dir=export, overwrite=True,
                         sampling=sampling, progress=False)
        trainer = pl.Trainer(accelerator="gpu", devices=1, max_epochs=10, callbacks=[nas],
                             logger=False, enable_checkpointing=False,
                             enable_progress_bar=False)
        started = time.perf_counter()
        trainer.fit(model, datamodule=DigitsDataModule())
        seconds = time.perf_counter() - started
        cost = nas.result.cost
        assert cost["device"].startswith("cuda"), cost["device"]  # where training and search ran
        subnet = build_subnet(load_architecture(export)).eval()
        x = torch.rand(64, 1, 8, 8, device="cuda")
        model.cuda().eval()  # Lightning hands the module back on the CPU after fit
        torch.backends.cudnn.allow_tf32 = False  # TF32 convs differ from CPU by ~1e-3
        diff = (subnet(x.cpu()) - model(x).cpu()).abs().max().item()
        torch.backends.cudnn.allow_tf32 = True
        lines += [f"## sampling={sampling}",
                  f"- fit (10 epochs) + search + export: {seconds:.1f} s "
                  f"(train {cost['train_seconds']:.1f} s, search {cost['search_seconds']:.1f} s)",
                  f"- winner: {nas.result.chosen.macs:,} MACs, held-out top-1 "
                  f"{nas.result.score:.4f}, {len(nas.result.candidates)} candidates",
                  f"- ran on {cost['device']}; max |CPU subnet - CUDA supernet| = {diff:.2e} "
                  "(fp32, TF32 off)",
                  f"- energy: {cost['energy_kwh'] * 1000:.3f} Wh by {cost['method']}", ""]
        assert diff < 1e-3, diff
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
