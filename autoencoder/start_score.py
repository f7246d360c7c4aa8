"""Do no harm: score the model a run starts from, and keep it when no epoch beats it.

A run that starts from pretrained weights (``init_from``, ``encoder.weights``) can end worse
than its start: fine-tuning can forget. :class:`StartScore` validates the starting model
before the first optimiser step, logs that score as the first point of the validation curve
(step 0), saves the model as ``start.ckpt`` and enters it into the best-checkpoint race of
the ``ModelCheckpoint`` that monitors the same metric. An epoch then has to *beat* the start
to become the best checkpoint, which the final test, ``metrics.json`` and ``evaluate`` use;
when none does, the run says so and returns the start.

The score is computed the way validation computes it (the same loss, metrics, precision
and eval mode) on the whole validation split on every rank, so every rank holds the same
value without a collective of its own (the metrics' own sync averages equal values). The
callback's state (the score) and the checkpoint callback's (the best so far) are in every
checkpoint, so a resumed run neither scores again nor forgets the start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.steps import evaluating

log = logging.getLogger(__name__)

START_FILENAME = "start.ckpt"


@torch.no_grad()
def validation_score(trainer: pl.Trainer, pl_module: Autoencoder) -> dict[str, float]:
    """``val/loss`` and the validation metrics of ``pl_module`` as it is now, over the whole
    validation split (the datamodule's loader), through the model's own loss and metrics, in
    eval mode and the trainer's precision; every submodule's mode is restored afterwards."""
    loader = trainer.datamodule.val_dataloader()
    metrics = pl_module.val_metrics.clone()
    metrics.reset()
    total_loss, count = 0.0, 0
    with evaluating(pl_module):
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            with trainer.precision_plugin.forward_context():
                images, reconstruction, loss = pl_module.reconstruction_loss(
                    images.to(pl_module.device)
                )
            total_loss += float(loss) * len(images)
            count += len(images)
            pl_module.update_metrics(metrics, reconstruction, images)
        scores = {key: float(value) for key, value in metrics.compute().items()}
    return {"val/loss": total_loss / max(1, count), **scores}


class StartScore(Callback):
    """Validate the starting model before the first step and make it the checkpoint to beat.

    Args:
        dirpath: where ``start.ckpt`` is written (the run's ``checkpoints/``).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.scores: dict[str, float] | None = None
        self.path: str | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scores is not None or trainer.global_step > 0:  # a resumed run
            return
        self.scores = validation_score(trainer, pl_module)
        for logger in trainer.loggers:
            logger.log_metrics(self.scores, step=0)
        self.path = str(self.dirpath / START_FILENAME)
        trainer.save_checkpoint(self.path)
        entered = [
            checkpoint
            for checkpoint in trainer.checkpoint_callbacks
            if isinstance(checkpoint, ModelCheckpoint)
            and checkpoint.monitor in self.scores
            and checkpoint.save_top_k == 1
        ]
        for checkpoint in entered:
            checkpoint.load_state_dict(_with_best(checkpoint, self.path, self.scores))
        shown = ", ".join(f"{key} {value:.4g}" for key, value in self.scores.items())
        rank_zero_info(f"start: the model this run starts from scores {shown} ({self.path})")
        if not entered:
            rank_zero_warn(
                "start: no best-checkpoint callback monitors one of "
                f"{', '.join(self.scores)} with save_top_k=1, so the start is scored but not "
                "kept as the checkpoint to beat."
            )

    def returned_start(self, best_ckpt: str | None) -> bool:
        """Whether the best checkpoint is still the start (no epoch beat it)."""
        return (
            self.path is not None and best_ckpt is not None and Path(best_ckpt) == Path(self.path)
        )

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "path": self.path}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scores = state_dict.get("scores")
        self.path = state_dict.get("path")


def _with_best(checkpoint: ModelCheckpoint, path: str, scores: dict[str, float]) -> dict[str, Any]:
    """The state of ``checkpoint`` with ``path`` as its best (and only kept) checkpoint, at
    its score of the monitored metric."""
    score = torch.tensor(scores[checkpoint.monitor])
    return {
        **checkpoint.state_dict(),
        "best_model_path": path,
        "best_model_score": score,
        "best_k_models": {path: score},
        "kth_best_model_path": path,
        "kth_value": score,
    }
