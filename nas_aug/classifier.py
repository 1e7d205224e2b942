"""A plain Lightning image classifier around any network (what recipes train)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from .augment import Policy, PolicyAugment


class ImageClassifier(pl.LightningModule):
    """Cross-entropy training with AdamW and a cosine schedule; logs loss and top-1 accuracy.

    ``channels_last`` stores the network's conv weights channels-last, which runs the small
    convolutions of these spaces about 2.5x faster on CPU (see ``benchmarks/``). With a
    ``policy`` (say, one ``AugmentSearch`` exported), training batches are augmented on the
    device by :class:`~nas_aug.augment.PolicyAugment` (seeded by ``augment_seed``); validation
    and test batches never are.

    Args:
        net: the network to train.
        lr: AdamW's learning rate (the cosine schedule's peak).
        weight_decay: AdamW's weight decay.
        label_smoothing: the cross-entropy's label smoothing.
        channels_last: store the network's weights channels-last.
        policy: an augmentation policy for the training batches (``None``: none).
        augment_seed: the seed of the policy's draws.

    >>> model = ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, net: nn.Module, lr: float = 5e-3, weight_decay: float = 1e-4,
                 label_smoothing: float = 0.0, channels_last: bool = True,
                 policy: Policy | None = None, augment_seed: int = 0):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.lr, self.weight_decay, self.label_smoothing = lr, weight_decay, label_smoothing
        self.augment = None if policy is None else PolicyAugment(policy, seed=augment_seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        if stage == "train" and self.augment is not None:
            x = self.augment(x)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        # validation and test metrics are averaged over processes (each holds a shard)
        sync = stage != "train"
        self.log(f"{stage}_loss", loss, prog_bar=stage != "train", sync_dist=sync)
        self.log(f"{stage}_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True,
                 sync_dist=sync)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr,
                                      weight_decay=self.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
