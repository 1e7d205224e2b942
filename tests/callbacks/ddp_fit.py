"""A two-process CPU fit (DDP over gloo) with OneShotNAS(STRATEGY) and AugmentSearch(dada);
each rank writes what it holds at the end (and how many held-out scores it computed) to
``OUT/rank<r>.json``.

    python tests/callbacks/ddp_fit.py OUT STRATEGY

Run as a script (not collected by pytest): Lightning's DDP launcher starts the second process
by running this file again.
"""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for helpers

from helpers import SMALL_SPACES, LitClassifier, count_calls  # noqa: E402

from nas_aug import Budget  # noqa: E402
from nas_aug.callbacks import AugmentSearch, OneShotNAS, one_shot_nas  # noqa: E402
from nas_aug.data import DigitsDataModule  # noqa: E402
from nas_aug.search_spaces import create_space  # noqa: E402


def main(out: Path, strategy: str) -> None:
    torch.set_num_threads(1)
    scored = count_calls(one_shot_nas, "top1_accuracy")
    pl.seed_everything(0, verbose=False)
    model = LitClassifier(create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"]))
    options = dict(top_k=2, lr=0.05) if strategy != "spos" else dict(population_size=4,
                                                                      generations=2)
    nas = OneShotNAS(strategy=strategy, budget=Budget(macs=1_000_000), export_dir=out / "arch",
                     overwrite=True, calibration_batches=2, progress=False, **options)
    search = AugmentSearch(method="dada", ops=("rotate", "invert"), update_every=1,
                           export_dir=out / "policy",
                           overwrite=True)
    # a single sampled path leaves parameters without gradients: DDP must look for them
    ddp = "ddp" if strategy == "darts" else "ddp_find_unused_parameters_true"
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=ddp, max_epochs=2,
                         limit_train_batches=3, limit_val_batches=2, callbacks=[nas, search],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    state = {"world_size": trainer.world_size, "sample": nas.result.sample,
             "alpha": {k: v.tolist() for k, v in nas.strategy.alpha.state_dict().items()}
             if nas.strategy.has_outer_step else None,
             "policy": [p.tolist() for p in search.method.policy.parameters()],
             "heldout_consumed": [nas._stream.consumed if nas._stream else None,
                                  search._stream.consumed],
             "weights": float(sum(p.double().sum() for p in model.parameters())),
             "scored": scored[0], "history": getattr(nas.strategy, "search_state", {}).get(
                 "history")}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(state))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
