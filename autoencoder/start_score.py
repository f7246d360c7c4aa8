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

log = logging.getLogger(__name__)

START_FILENAME = "start.ckpt"


@torch.no_grad()
def validation_score(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
    """``val/loss`` and the validation metrics of ``pl_module`` as it is now, over the whole
    validation split (the datamodule's loader), in eval mode and the trainer's precision;
    every submodule's mode is restored afterwards."""
    loader = trainer.datamodule.val_dataloader()
    metrics = pl_module.val_metrics.clone()
    metrics.reset()
    modes = [(module, module.training) for module in pl_module.modules()]
    pl_module.eval()
    total_loss, count = 0.0, 0
    try:
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            images = images.to(pl_module.device)
            with trainer.precision_plugin.forward_context():
                reconstruction = pl_module(images.contiguous(memory_format=pl_module.memory_format))
            reconstruction = reconstruction.float()
            total_loss += float(pl_module.loss(reconstruction, images)) * len(images)
            count += len(images)
            with torch.autocast(images.device.type, enabled=False):
                metrics.update(reconstruction.contiguous(), images.float())
        scores = {key: float(value) for key, value in metrics.compute().items()}
    finally:
        for module, training in modes:
            module.training = training
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
            score = torch.tensor(self.scores[checkpoint.monitor])
            checkpoint.best_k_models = {self.path: score}
            checkpoint.kth_best_model_path = self.path
            checkpoint.kth_value = score
            checkpoint.best_model_path = self.path
            checkpoint.best_model_score = score
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
