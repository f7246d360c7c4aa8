"""The pretraining job: an encoder trained as an image classifier ("develop a model"
transfer learning).

A torchvision ResNet or VGG (:class:`~autoencoder.models.classifier.Classifier`),
architecture unchanged, learns to classify a labelled dataset from random initialisation.
Its state dict then fits :class:`~autoencoder.models.encoders.Encoder` key for key (the
classifier head is ignored there), so ``encoder.weights=PATH`` turns it into an
autoencoder's encoder; with the head it remains a classifier for evaluation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from autoencoder.cli import hydra_main
from autoencoder.config import instantiate, instantiate_all
from autoencoder.errors import ConfigError
from autoencoder.jobs import fitting_job, write_record
from autoencoder.models.classifier import Classifier, labels_hint
from autoencoder.models.shape import EncoderGeometry
from autoencoder.models.weights import weights_info_path

log = logging.getLogger(__name__)

VAL_METRIC = "val/acc"


def save_encoder_weights(classifier: Classifier, path: Path) -> None:
    """Save the torchvision state dict as plain contiguous CPU tensors (the job writes what
    they are beside them: architecture, input geometry, class names, in ``.json``).

    The file loads weights-only: as an encoder with
    ``encoder.weights=PATH``, or into ``torchvision.models.get_model(name,
    num_classes=N)`` as a classifier.
    """
    state_dict = {
        key: value.detach().cpu().contiguous() for key, value in classifier.net.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)


def _num_classes(datamodule: pl.LightningDataModule) -> int:
    """The datamodule's number of classes; a :class:`ConfigError` naming the fix if unlabelled."""
    num_classes = getattr(datamodule, "num_classes", None)
    if isinstance(num_classes, int):
        return num_classes
    raise ConfigError(
        f"pretraining needs labelled images, but {type(datamodule).__name__} has no labels: "
        f"{labels_hint(datamodule)}."
    )


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Train a classifier, test its best checkpoint and save its weights for the encoder.

    Returns the record that is also written to ``metrics.json``.
    """
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    if rank_zero_only.rank == 0:
        datamodule.prepare_data()
    num_classes = _num_classes(datamodule)
    classifier: Classifier = instantiate(cfg.classifier, num_classes=num_classes)
    callbacks: list[Callback] = instantiate_all(cfg.callbacks)
    loggers: list[Logger] = instantiate_all(cfg.get("logger"))
    # Testing the best checkpoint loads its weights into ``classifier``: the weights saved
    # below are the best ones, not the last epoch's.
    with fitting_job(cfg, loggers) as job:
        outcome = job.fit(classifier, datamodule, callbacks, ckpt_path=cfg.get("ckpt_path"))
        job.test(outcome)
    val_acc = outcome.best_score
    if val_acc is None:
        value = outcome.trainer.callback_metrics.get(VAL_METRIC)
        val_acc = float(value) if value is not None else None
    weights_path = Path(cfg.output_weights).expanduser().resolve()
    record = outcome.record(
        name=classifier.name,
        num_classes=num_classes,
        weights_path=str(weights_path),
        monitored={VAL_METRIC: val_acc},
    )
    if outcome.trainer.is_global_zero:
        save_encoder_weights(classifier, weights_path)
        weights_info_path(weights_path).write_text(
            json.dumps(
                {
                    **EncoderGeometry(
                        classifier.name,
                        stem_pool=classifier.stem_pool,
                        input_scale=classifier.input_scale,
                    ).to_json(),
                    "num_classes": num_classes,
                    "classes": getattr(datamodule, "class_names", None),
                    "test/acc": record.test.get("test/acc"),
                },
                indent=2,
            )
            + "\n"
        )
        log.info(
            "encoder weights saved to %s; use encoder.weights=%s (with encoder=%s)",
            weights_path,
            weights_path,
            classifier.name,
        )
    write_record(outcome.trainer, output_dir, record)
    return record.to_json()


# python -m autoencoder.pretrain [overrides ...]: scripts/pretrain_encoder.py, from any folder
main = hydra_main(pretrain, "pretrain", metric=VAL_METRIC)

if __name__ == "__main__":
    main()
