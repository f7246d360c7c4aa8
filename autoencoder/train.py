"""The training job: compose, instantiate, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, Timer
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from autoencoder.checkpointing import read_checkpoint
from autoencoder.config import instantiate, instantiate_all
from autoencoder.distributed import JobRanks, relaunchable_job
from autoencoder.errors import ConfigError, ResourceUnavailableError
from autoencoder.finetuning import TwoPhaseFinetuning
from autoencoder.loggers import finish_loggers, machine_description, run_config
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.runs import build_model, start_from_checkpoint
from autoencoder.start_score import StartScore

log = logging.getLogger(__name__)

TEST_METRICS = ("test/loss", "test/mse", "test/mae", "test/psnr", "test/ssim")


def _build_data_and_encoder(cfg: DictConfig) -> tuple[pl.LightningDataModule, Encoder]:
    """Prepare the data and the encoder weights, reporting every missing download at once."""
    datamodule = instantiate(cfg.data)
    problems: list[str] = []
    if rank_zero_only.rank == 0:
        try:
            datamodule.prepare_data()
        except ResourceUnavailableError as error:
            problems.append(str(error))
    encoder = None
    try:
        encoder = instantiate(cfg.encoder)
    except ResourceUnavailableError as error:
        problems.append(str(error))
    if problems:
        raise ResourceUnavailableError("\n".join(problems))
    return datamodule, encoder


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job; return the summary that is also written to ``metrics.json``."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule, encoder = _build_data_and_encoder(cfg)
    model: Autoencoder = build_model(cfg, encoder)
    _start_from(model, cfg.get("init_from"), cfg.get("ckpt_path"))
    finetuning: TwoPhaseFinetuning = instantiate(cfg.finetune)
    if cfg.encoder.get("weights") is None and finetuning.plateau.max_frozen_epochs != 0:
        log.warning(
            "encoder.weights=null with a frozen phase: the decoder first trains on a frozen, "
            "randomly initialised encoder. To train from scratch, use finetune=full."
        )
    callbacks: list[Callback] = [*instantiate_all(cfg.callbacks), finetuning]
    start_score = _start_score(cfg, output_dir)
    if start_score is not None:
        callbacks.append(start_score)
    loggers: list[Logger] = instantiate_all(cfg.get("logger"))
    with relaunchable_job(output_dir) as ranks:
        trainer, summary = _fit_and_test(
            cfg, model, datamodule, finetuning, start_score, callbacks, loggers, ranks
        )
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("metrics written to %s", output_dir / "metrics.json")
    return summary


def _start_score(cfg: DictConfig, output_dir: Path) -> StartScore | None:
    """The do-no-harm callback when ``score_start`` asks for it: ``auto`` scores runs that
    start from pretrained weights (``init_from``, or ``encoder.weights`` other than null)."""
    setting = cfg.get("score_start", "auto")
    if setting == "auto":
        setting = bool(cfg.get("init_from")) or cfg.encoder.get("weights") is not None
    if not isinstance(setting, bool):
        raise ConfigError(f"score_start must be auto, true or false; got {setting!r}.")
    return StartScore(output_dir / "checkpoints") if setting else None


def _start_from(model: Autoencoder, init_from: str | None, ckpt_path: str | None) -> None:
    """Load ``init_from``'s weights into the new model, unless ``ckpt_path`` resumes a run
    (whose checkpoint holds its own weights)."""
    if not init_from:
        return
    if ckpt_path:
        log.info("resuming from %s: init_from=%s is not read", ckpt_path, init_from)
        return
    new = start_from_checkpoint(model, init_from)
    shown = ", ".join(new[:6]) + (" ..." if len(new) > 6 else "")
    log.info(
        "weights from %s; %d tensors it lacks keep their initialisation: %s",
        init_from,
        len(new),
        shown or "none",
    )


def _fit_and_test(
    cfg: DictConfig,
    model: Autoencoder,
    datamodule: pl.LightningDataModule,
    finetuning: TwoPhaseFinetuning,
    start_score: StartScore | None,
    callbacks: list[Callback],
    loggers: list[Logger],
    ranks: JobRanks,
) -> tuple[pl.Trainer, dict[str, Any]]:
    """Fit, test the best checkpoint and summarise. A failure still closes the logger runs
    (W&B: as failed), so the next job of a multirun gets a run of its own."""
    failed = True
    try:
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        ranks.attach(trainer)
        for logger in loggers:
            logger.log_hyperparams(run_config(cfg))
        started = time.perf_counter()
        in_memory = getattr(datamodule, "in_memory", False)
        with _without_expected_warnings(in_memory):
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_seconds = fit_wall_time(callbacks, time.perf_counter() - started)
        optimized = trainer.callback_metrics.get(cfg.optimized_metric)
        # read before testing: loading the best checkpoint also restores callback states
        transition_epoch, transition_step = finetuning.transition_epoch, finetuning.transition_step
        best_ckpt = best_checkpoint(callbacks)
        returned_start = start_score is not None and start_score.returned_start(best_ckpt)
        if returned_start:
            rank_zero_warn(
                "start: no epoch beat the model this run started from "
                f"({_scores(start_score.scores)}): the best checkpoint, the test and "
                f"metrics.json are the start's ({best_ckpt})."
            )
        test_metrics: dict[str, float] = {}
        if cfg.get("test"):  # debug=fast (no checkpoints): one batch with the final weights
            with _without_expected_warnings(in_memory):
                results = trainer.test(model, datamodule=datamodule, ckpt_path=best_ckpt or None)
            test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}
        summary = {
            **{name: test_metrics.get(name) for name in TEST_METRICS},
            **model.bottleneck_info,
            "transition_epoch": transition_epoch,
            "transition_step": transition_step,
            "best_ckpt": best_ckpt,
            "best_epoch": 0 if returned_start else checkpoint_epochs(best_ckpt),
            "start": start_score.scores if start_score is not None else None,
            "fit_seconds": round(fit_seconds, 2),
            "epochs": trainer.current_epoch,
            "machine": machine_description(),
            cfg.optimized_metric: float(optimized) if optimized is not None else None,
        }
        failed = False
    finally:
        finish_loggers(loggers, failed)
    return trainer, summary


def checkpoint_epochs(path: str | None) -> int | None:
    """Training epochs behind a checkpoint written at the end of an epoch's validation."""
    return int(read_checkpoint(path)["epoch"]) + 1 if path else None


def _scores(scores: dict[str, float] | None) -> str:
    return ", ".join(f"{key} {value:.4g}" for key, value in (scores or {}).items())


def fit_wall_time(callbacks: list[Callback], this_process: float) -> float:
    """Seconds spent fitting: Lightning's ``Timer`` keeps them in the checkpoints, so a
    resumed run counts every part; without one, this process's fit."""
    timer = next((c for c in callbacks if isinstance(c, Timer)), None)
    return timer.time_elapsed("train") if timer is not None else this_process


@contextmanager
def _without_expected_warnings(in_memory_data: bool) -> Iterator[None]:
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


def best_checkpoint(callbacks: list[Callback]) -> str | None:
    """Path of the best checkpoint by the monitored metric, if one was saved."""
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return None


def optimized_value(summary: dict[str, Any], metric: str) -> float:
    """The value a sweeper optimises; NaN when the metric was never logged."""
    value = summary.get(metric)
    return float(value) if value is not None else math.nan
