"""A SPOS fit whose evolutionary search can be killed (SIGKILL) after its first N scores, then
run again (the same seeded fit, which trains the same weights); writes what the search found
to ``OUT/found.json``.

    python tests/callbacks/killed_search.py OUT [KILL_AFTER]

Run as a script by tests/callbacks/test_search_resume.py (not collected by pytest).
"""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for helpers

from helpers import SMALL_SPACES, LitClassifier, count_calls  # noqa: E402

from nas_aug.callbacks import OneShotNAS, one_shot_nas  # noqa: E402
from nas_aug.data import DigitsDataModule  # noqa: E402
from nas_aug.search_spaces import create_space  # noqa: E402
from nas_aug.strategies import Evolution  # noqa: E402


def main(out: Path, kill_after: int | None) -> None:
    torch.set_num_threads(1)
    scored = count_calls(one_shot_nas, "top1_accuracy",  # killed when kill_after are done
                         kill_at=None if kill_after is None else kill_after + 1)
    pl.seed_everything(0, verbose=False)
    model = LitClassifier(create_space("mobilenet_tiny", **SMALL_SPACES["mobilenet_tiny"]))
    nas = OneShotNAS(search=Evolution(population_size=4, generations=4),
                     export_dir=out / "arch", calibration_batches=2, progress=False)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2,
                         callbacks=[nas], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=out)
    trainer.fit(model, datamodule=DigitsDataModule())
    found = {"sample": nas.result.sample, "score": nas.result.score,
             "history": nas.strategy.search_state["history"], "scored": scored[0]}
    (out / "found.json").write_text(json.dumps(found))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
