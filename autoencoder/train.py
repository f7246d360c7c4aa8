"""The training job: decide where the weights come from, build the data and the model, fit,
test the returned checkpoint, write metrics.json; return the record and what was built.

Like lightning-hydra-template's ``src/train.py``: one function, :func:`train`, that returns
``(record, objects)``, so that notebooks, benchmarks and tests can use the trained model,
the trainer and the callbacks directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from autoencoder.bn_reestimation import ReestimateBatchNorm
from autoencoder.cli import exit_on_renamed_keys, hydra_main
from autoencoder.config import instantiate, instantiate_all
from autoencoder.errors import ResourceUnavailableError
from autoencoder.finetuning import TwoPhaseFinetuning
from autoencoder.jobs import FitOutcome, fitting_job, write_record
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder
from autoencoder.run_folder import RunMetrics
from autoencoder.runs import build_model, start_from_checkpoint
from autoencoder.start_score import StartScore

log = logging.getLogger(__name__)

TEST_METRICS = ("test/loss", "test/mse", "test/mae", "test/psnr", "test/ssim")


@dataclass(frozen=True)
class WeightSource:
    """Where a training run's weights come from, decided once from its config.

    Attributes:
        resume: the checkpoint the run resumes (``ckpt_path``): every weight, the optimiser,
            the schedule and the fine-tuning phase; nothing else is read.
        init_from: the checkpoint whose weights a new run starts from (``init_from``).
        encoder_weights: the encoder's weights (``encoder.weights``: ``imagenet``, a state
            dict, a run's checkpoint), ``None`` for a random encoder.
    """

    resume: str | None
    init_from: str | None
    encoder_weights: str | None

    @classmethod
    def of(cls, cfg: DictConfig) -> WeightSource:
        return cls(
            resume=cfg.get("ckpt_path") or None,
            init_from=cfg.get("init_from") or None,
            encoder_weights=cfg.encoder.get("weights"),
        )

    @property
    def pretrained(self) -> bool:
        """The run started from trained weights (a resumed run too, from its first part's)."""
        return self.init_from is not None or self.encoder_weights is not None

    @property
    def encoder_weights_read(self) -> str | None:
        """The encoder weights to load: none when a checkpoint holds every weight."""
        return None if self.resume or self.init_from else self.encoder_weights

    @property
    def init_from_read(self) -> str | None:
        """The checkpoint to start from: none when resuming (the run's own holds them)."""
        return None if self.resume else self.init_from


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one training job (a composed ``conf/train.yaml``).

    Returns:
        The record that is also written to ``metrics.json`` (:class:`RunMetrics` as JSON),
        and the objects the job built: ``model`` (with the returned checkpoint's weights),
        ``datamodule``, ``trainer`` and ``callbacks``.
    """
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    weights = WeightSource.of(cfg)
    datamodule, encoder = _build_data_and_encoder(cfg, weights)
    model: Autoencoder = build_model(cfg, encoder)
    if weights.init_from_read:
        _start_from(model, weights.init_from_read)
    finetuning: TwoPhaseFinetuning = instantiate(cfg.finetune)
    if not weights.pretrained and finetuning.plateau.max_frozen_epochs != 0:
        log.warning(
            "encoder.weights=null with a frozen phase: the decoder first trains on a frozen, "
            "randomly initialised encoder. To train from scratch, use finetune=full."
        )
    callbacks: list[Callback] = [*instantiate_all(cfg.callbacks), finetuning]
    start_score = _start_score(cfg.get("score_start", "auto"), weights, output_dir)
    if start_score is not None:
        callbacks.append(start_score)
    if cfg.get("reestimate_bn", False):  # after the start is scored: it scores the given model
        if not weights.pretrained:
            log.warning(
                "reestimate_bn=true on a run without pretrained weights: it re-estimates the "
                "statistics of a random initialisation (harmless, and of no use)."
            )
        callbacks.append(ReestimateBatchNorm())
    loggers: list[Logger] = instantiate_all(cfg.get("logger"))
    with fitting_job(cfg, loggers) as job:
        outcome = job.fit(model, datamodule, callbacks, ckpt_path=weights.resume)
        # read before the test, which restores the callbacks' states from the best checkpoint
        phases = {
            "transition_epoch": finetuning.transition_epoch,
            "transition_step": finetuning.transition_step,
        }
        job.test(outcome)
    record = _record(cfg, outcome, model, start_score, phases)
    write_record(outcome.trainer, output_dir, record)
    objects = {
        "model": model,
        "datamodule": datamodule,
        "trainer": outcome.trainer,
        "callbacks": callbacks,
    }
    return record.to_json(), objects


def _record(
    cfg: DictConfig,
    outcome: FitOutcome,
    model: Autoencoder,
    start_score: StartScore | None,
    phases: dict[str, int | None],
) -> RunMetrics:
    """The run's :class:`RunMetrics`: the returned checkpoint's validation and test, the
    bottleneck, the phases and the start's scores (with a warning when the start is what
    the run returns)."""
    returned_start = start_score is not None and start_score.returned_start(outcome.best_ckpt)
    if returned_start:
        rank_zero_warn(
            "start: no epoch beat the model this run started from "
            f"({_scores(start_score.scores)}): the best checkpoint, the test and "
            f"metrics.json are the start's ({outcome.best_ckpt})."
        )
    record = outcome.record(
        **phases,
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
    return record


def _build_data_and_encoder(
    cfg: DictConfig, weights: WeightSource
) -> tuple[pl.LightningDataModule, Encoder]:
    """Prepare the data and the encoder weights, reporting every missing download at once."""
    datamodule = instantiate(cfg.data)
    problems: list[str] = []
    if rank_zero_only.rank == 0:
        try:
            datamodule.prepare_data()
        except ResourceUnavailableError as error:
            problems.append(str(error))
    encoder = None
    if weights.encoder_weights is not None and weights.encoder_weights_read is None:
        source = "ckpt_path" if weights.resume else "init_from"
        log.info(
            "encoder.weights=%s is not read: %s holds the weights", cfg.encoder.weights, source
        )
    if weights.init_from and weights.resume:
        log.info("resuming from %s: init_from=%s is not read", weights.resume, weights.init_from)
    try:
        encoder = instantiate(cfg.encoder, weights=weights.encoder_weights_read)
    except ResourceUnavailableError as error:
        problems.append(str(error))
    if problems:
        raise ResourceUnavailableError("\n".join(problems))
    return datamodule, encoder


def _start_score(setting: Any, weights: WeightSource, output_dir: Path) -> StartScore | None:
    """The do-no-harm callback when ``score_start`` asks for it: ``auto`` scores runs that
    start from pretrained weights (``init_from``, or ``encoder.weights`` other than null).
    Its value was checked before the job (:mod:`autoencoder.preflight`)."""
    if setting == "auto":
        setting = weights.pretrained
    return StartScore(output_dir / "checkpoints") if setting else None


def _start_from(model: Autoencoder, init_from: str) -> None:
    """Load ``init_from``'s weights into the new model."""
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
