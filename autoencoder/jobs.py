"""The skeleton every fitting job shares (training, pretraining): the DDP relaunch of
multirun jobs, the trainer, the hyperparameters logged, the fit (resumed from a
checkpoint), the best checkpoint by the monitored metric, its validation and test, the
loggers closed (W&B runs of failed jobs marked failed) and ``metrics.json`` written on
rank 0.

Like lightning-hydra-template's ``task_wrapper``: each job builds what it fits, calls
:meth:`FittingJob.fit` and :meth:`FittingJob.test` inside :func:`fitting_job`, and says what
its record holds; how a job is run is written once, here.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer
from pytorch_lightning.loggers import Logger

from autoencoder.checkpointing import checkpoint_epochs, read_checkpoint
from autoencoder.config import instantiate
from autoencoder.distributed import JobRanks, relaunchable_job
from autoencoder.loggers import finish_loggers, machine_description, run_config
from autoencoder.run_folder import RunFolder, RunMetrics

log = logging.getLogger(__name__)


@dataclass
class FitOutcome:
    """What a fit and its test gave, for the job to put in its record."""

    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    best_ckpt: str | None
    best_score: float | None  # the monitored value of the best checkpoint
    fit_seconds: float
    test_metrics: dict[str, float] = field(default_factory=dict)
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


class FittingJob:
    """The steps of a fitting job, inside :func:`fitting_job`: :meth:`fit`, then what the
    job reads of its callbacks, then :meth:`test` (which restores the callbacks' states
    from the best checkpoint)."""

    def __init__(self, cfg: DictConfig, loggers: list[Logger], ranks: JobRanks) -> None:
        self.cfg = cfg
        self.loggers = loggers
        self.ranks = ranks

    def fit(
        self,
        module: pl.LightningModule,
        datamodule: pl.LightningDataModule,
        callbacks: list[Callback],
        ckpt_path: str | None = None,
    ) -> FitOutcome:
        """Fit ``module`` on ``datamodule`` with the trainer of ``cfg.trainer`` (resumed
        from ``ckpt_path``) and find the best checkpoint by the monitored metric."""
        trainer: pl.Trainer = instantiate(
            self.cfg.trainer, callbacks=callbacks, logger=self.loggers or False
        )
        self.ranks.attach(trainer)
        for logger in self.loggers:
            logger.log_hyperparams(run_config(self.cfg))
        started = time.perf_counter()
        with without_expected_warnings(datamodule):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        checkpoint = best_checkpoint_callback(callbacks)
        score = checkpoint.best_model_score if checkpoint is not None else None
        return FitOutcome(
            trainer,
            module,
            datamodule,
            best_ckpt=(checkpoint.best_model_path or None) if checkpoint else None,
            best_score=float(score) if score is not None else None,
            fit_seconds=fit_wall_time(callbacks, time.perf_counter() - started),
        )

    def test(self, outcome: FitOutcome) -> None:
        """The returned model's validation metrics (:func:`returned_validation`), and its
        test (when ``cfg.test``, default true; without a checkpoint, the final weights)."""
        trainer, module, datamodule = outcome.trainer, outcome.module, outcome.datamodule
        with without_expected_warnings(datamodule):
            outcome.validation, outcome.last_validation = returned_validation(
                trainer, module, datamodule, outcome.best_ckpt
            )
            if self.cfg.get("test", True):  # debug=fast (no checkpoints): the final weights
                results = trainer.test(module, datamodule=datamodule, ckpt_path=outcome.best_ckpt)
                outcome.test_metrics = (
                    {k: float(v) for k, v in results[0].items()} if results else {}
                )


@contextmanager
def fitting_job(cfg: DictConfig, loggers: list[Logger]) -> Iterator[FittingJob]:
    """The frame of a fitting job: the DDP relaunch of multirun jobs around it, and its
    logger runs closed when it ends, also when it fails (W&B: marked failed), so the next
    job of a multirun gets a run of its own. The job calls :meth:`FittingJob.fit` and
    :meth:`FittingJob.test` itself."""
    with relaunchable_job(Path(cfg.paths.output_dir)) as ranks:
        failed = True
        try:
            yield FittingJob(cfg, loggers, ranks)
            failed = False
        finally:
            finish_loggers(loggers, failed)


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


@contextmanager
def without_expected_warnings(datamodule: pl.LightningDataModule) -> Iterator[None]:
    """Hide the warnings a run would print that ask nothing of the user."""
    with warnings.catch_warnings():
        if getattr(
            datamodule, "in_memory", False
        ):  # loader workers would only copy tensors already in memory
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
