"""The skeleton every fitting job shares (training, pretraining): the DDP relaunch of
multirun jobs, the trainer, the hyperparameters logged, the fit (resumed with
``ckpt_path``), the best checkpoint by the monitored metric, its test, the loggers closed
(W&B runs of failed jobs marked failed) and ``metrics.json`` written on rank 0.

Like lightning-hydra-template's ``task_wrapper``: each job builds what it fits and says what
its record holds; how a job is run is written once, here.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer
from pytorch_lightning.loggers import Logger

from autoencoder.checkpointing import read_checkpoint
from autoencoder.config import instantiate
from autoencoder.distributed import relaunchable_job
from autoencoder.loggers import finish_loggers, machine_description, run_config
from autoencoder.run_folder import RunFolder, RunMetrics

log = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    """What a fit and its test gave, for the job to put in its record."""

    trainer: pl.Trainer
    best_ckpt: str | None
    best_score: float | None  # the monitored value of the best checkpoint
    test_metrics: dict[str, float]
    fit_seconds: float
    # what the job read from the trainer after the fit, before testing (which loads the
    # best checkpoint and restores the callbacks' states from it)
    after_fit: dict[str, Any] = field(default_factory=dict)
    # the validation metrics (val/*) of the model the job returns: its best checkpoint's
    validation: dict[str, float] = field(default_factory=dict)
    # the last epoch's validation metrics, when the best checkpoint is another one
    last_validation: dict[str, float] | None = None

    def record(self, **entries: Any) -> RunMetrics:
        """The job's :class:`RunMetrics`: the entries every job reports, and ``entries``."""
        metrics = RunMetrics(
            test=dict(self.test_metrics),
            best_ckpt=self.best_ckpt,
            best_epoch=checkpoint_epochs(self.best_ckpt),
            epochs=self.trainer.current_epoch,
            fit_seconds=round(self.fit_seconds, 2),
            machine=machine_description(),
        )
        for key, value in entries.items():
            if hasattr(metrics, key):
                setattr(metrics, key, value)
            else:
                metrics.extra[key] = value
        return metrics


def fit_and_test(
    cfg: DictConfig,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    callbacks: list[Callback],
    loggers: list[Logger],
    after_fit: Callable[[pl.Trainer], dict[str, Any]] | None = None,
) -> FitOutcome:
    """Fit ``module`` on ``datamodule`` as ``cfg.trainer`` says, resuming from
    ``cfg.ckpt_path``, and test its best checkpoint (when ``cfg.test``, default true; without
    a checkpoint, the final weights). A failure still closes the logger runs (W&B: as
    failed), so the next job of a multirun gets a run of its own."""
    output_dir = Path(cfg.paths.output_dir)
    with relaunchable_job(output_dir) as ranks:
        failed = True
        try:
            trainer: pl.Trainer = instantiate(
                cfg.trainer, callbacks=callbacks, logger=loggers or False
            )
            ranks.attach(trainer)
            for logger in loggers:
                logger.log_hyperparams(run_config(cfg))
            in_memory = getattr(datamodule, "in_memory", False)
            started = time.perf_counter()
            with without_expected_warnings(in_memory):
                trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            fit_seconds = fit_wall_time(callbacks, time.perf_counter() - started)
            read = after_fit(trainer) if after_fit is not None else {}
            checkpoint = best_checkpoint_callback(callbacks)
            best_ckpt = (checkpoint.best_model_path or None) if checkpoint else None
            with without_expected_warnings(in_memory):
                validation, last_validation = returned_validation(
                    trainer, module, datamodule, best_ckpt
                )
            best_score = (
                float(checkpoint.best_model_score)
                if checkpoint is not None and checkpoint.best_model_score is not None
                else None
            )
            test_metrics: dict[str, float] = {}
            if cfg.get("test", True):  # debug=fast (no checkpoints): the final weights
                with without_expected_warnings(in_memory):
                    results = trainer.test(module, datamodule=datamodule, ckpt_path=best_ckpt)
                test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}
            failed = False
        finally:
            finish_loggers(loggers, failed)
    return FitOutcome(
        trainer,
        best_ckpt,
        best_score,
        test_metrics,
        fit_seconds,
        read,
        validation,
        last_validation,
    )


def returned_validation(
    trainer: pl.Trainer,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    best_ckpt: str | None,
) -> tuple[dict[str, float], dict[str, float] | None]:
    """The validation metrics (``val/*``) of the model a job returns, its best checkpoint,
    and the last epoch's when that is another model (``None`` otherwise).

    When the best checkpoint is not the last step's (an earlier epoch, or the start that no
    epoch beat), it is validated again, without logging, so that the record describes the
    model it returns rather than the last epoch's.
    """
    last = _validation_metrics(trainer.callback_metrics)
    if best_ckpt is None or read_checkpoint(best_ckpt)["global_step"] == trainer.global_step:
        return last, None
    loggers, trainer.loggers = trainer.loggers, []
    try:
        results = trainer.validate(
            module, datamodule=datamodule, ckpt_path=best_ckpt, verbose=False
        )
    finally:
        trainer.loggers = loggers
    return _validation_metrics(results[0] if results else {}), last


def _validation_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if key.startswith("val/")}


def write_record(trainer: pl.Trainer, output_dir: str | Path, metrics: RunMetrics) -> None:
    """``metrics.json`` into the run folder, on rank 0."""
    if trainer.is_global_zero:
        path = RunFolder(output_dir).write_metrics(metrics)
        log.info("metrics written to %s", path)


def fit_wall_time(callbacks: list[Callback], this_process: float) -> float:
    """Seconds spent fitting: Lightning's ``Timer`` keeps them in the checkpoints, so a
    resumed run counts every part; without one, this process's fit."""
    timer = next((c for c in callbacks if isinstance(c, Timer)), None)
    return timer.time_elapsed("train") if timer is not None else this_process


def best_checkpoint_callback(callbacks: list[Callback]) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best checkpoint by a monitored metric."""
    return next(
        (c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor is not None), None
    )


def checkpoint_epochs(path: str | None) -> int | None:
    """Training epochs behind a checkpoint written at the end of an epoch's validation (the
    epoch it records counts from 0); ``None`` without a checkpoint."""
    return int(read_checkpoint(path)["epoch"]) + 1 if path else None


@contextmanager
def without_expected_warnings(in_memory_data: bool) -> Iterator[None]:
    """Hide the warnings a run would print that ask nothing of the user."""
    with warnings.catch_warnings():
        if in_memory_data:  # loader workers would only copy tensors already in memory
            warnings.filterwarnings("ignore", message=r"The '\w+' does not have many workers")
        # Frozen BatchNorm layers are in eval mode on purpose (pretrained statistics).
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        # Lightning's own pytree helper builds torch's LeafSpec, which newer torch releases
        # deprecate; Lightning has to change, not the run.
        warnings.filterwarnings(
            "ignore",
            message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
            category=FutureWarning,
        )
        yield
