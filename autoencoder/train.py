"""The training job: compose, instantiate, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from autoencoder.cli import exit_on_renamed_keys, hydra_main
from autoencoder.config import instantiate, instantiate_all
from autoencoder.errors import ResourceUnavailableError
from autoencoder.finetuning import TwoPhaseFinetuning
from autoencoder.jobs import fit_and_test, write_record
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
    source = "ckpt_path" if cfg.get("ckpt_path") else "init_from" if cfg.get("init_from") else None
    try:
        if source is not None and cfg.encoder.get("weights") is not None:
            # the checkpoint holds every weight: downloading or reading others is wasted
            log.info(
                "encoder.weights=%s is not read: %s holds the weights", cfg.encoder.weights, source
            )
            encoder = instantiate(cfg.encoder, weights=None)
        else:
            encoder = instantiate(cfg.encoder)
    except ResourceUnavailableError as error:
        problems.append(str(error))
    if problems:
        raise ResourceUnavailableError("\n".join(problems))
    return datamodule, encoder


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job; return the record that is also written to ``metrics.json``."""
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

    def after_fit(trainer: pl.Trainer) -> dict[str, Any]:
        return {
            "transition_epoch": finetuning.transition_epoch,
            "transition_step": finetuning.transition_step,
        }

    outcome = fit_and_test(cfg, model, datamodule, callbacks, loggers, after_fit)
    returned_start = start_score is not None and start_score.returned_start(outcome.best_ckpt)
    if returned_start:
        rank_zero_warn(
            "start: no epoch beat the model this run started from "
            f"({_scores(start_score.scores)}): the best checkpoint, the test and "
            f"metrics.json are the start's ({outcome.best_ckpt})."
        )
    record = outcome.record(
        **outcome.after_fit,
        **model.bottleneck_info,
        start=start_score.scores if start_score is not None else None,
        # the returned model's (the best checkpoint's), and the last epoch's when it differs
        monitored={cfg.optimized_metric: outcome.validation.get(cfg.optimized_metric)},
    )
    if outcome.last_validation is not None:
        record.extra["last_epoch"] = {
            "epoch": outcome.trainer.current_epoch,
            cfg.optimized_metric: outcome.last_validation.get(cfg.optimized_metric),
        }
    record.test = {name: outcome.test_metrics.get(name) for name in TEST_METRICS}
    if returned_start:
        record.best_epoch = 0
    write_record(outcome.trainer, output_dir, record)
    return record.to_json()


def _start_score(cfg: DictConfig, output_dir: Path) -> StartScore | None:
    """The do-no-harm callback when ``score_start`` asks for it: ``auto`` scores runs that
    start from pretrained weights (``init_from``, or ``encoder.weights`` other than null).
    Its value was checked before the job (:mod:`autoencoder.preflight`)."""
    setting = cfg.get("score_start", "auto")
    if setting == "auto":
        setting = bool(cfg.get("init_from")) or cfg.encoder.get("weights") is not None
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


def _scores(scores: dict[str, float] | None) -> str:
    return ", ".join(f"{key} {value:.4g}" for key, value in (scores or {}).items())


def main() -> None:
    """``python -m autoencoder.train [overrides ...]``: the job of ``scripts/train.py``,
    with the project's configs, from any folder."""
    exit_on_renamed_keys()
    hydra_main(train, "train", metric="optimized_metric")()


if __name__ == "__main__":
    main()
