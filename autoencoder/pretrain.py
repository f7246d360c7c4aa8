"""Pretraining an encoder as an image classifier ("develop a model" transfer learning).

A torchvision ResNet or VGG, architecture unchanged, learns to classify a labelled dataset
from random initialisation. Its state dict then fits :class:`~autoencoder.models.encoders.Encoder`
key for key (the classifier head is ignored there), so ``encoder.weights=PATH`` turns it
into an autoencoder's encoder; with the head it remains a classifier for evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.classification import MulticlassAccuracy

from autoencoder.config import instantiate, instantiate_all
from autoencoder.data import ArraysDataModule, FolderDataModule
from autoencoder.errors import ConfigError
from autoencoder.logging import finish_loggers
from autoencoder.models.encoders import IMAGENET_MEAN, IMAGENET_STD, check_encoder_name
from autoencoder.param_groups import SCHEDULES, schedule_multiplier

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., Optimizer]
VAL_METRIC = "val/acc"
_LABEL_FIXES = {
    ArraysDataModule: "data=arrays needs a 'labels' array (integers, one per image) in both "
    "train.npz and test.npz",
    FolderDataModule: "data=folder needs data.labels_from_subfolders=true, with one subfolder "
    "per class (inside train/ and test/ when those exist)",
}


class Classifier(pl.LightningModule):
    """A torchvision ResNet or VGG classifier on [0, 1] pixels.

    Inputs are normalised with the ImageNet mean and std inside :meth:`forward`, exactly as
    :class:`~autoencoder.models.encoders.Encoder` does, so the features the network learns
    here are the ones it computes after transfer. ``net`` is the unmodified torchvision model
    (``torchvision.models.get_model(name, num_classes=num_classes)``); VGG's adaptive average
    pool lets it run on images as small as 32 px.

    Args:
        name: torchvision model name, one of :data:`~autoencoder.models.encoders.ENCODER_NAMES`.
        num_classes: number of label classes (at least 2).
        lr: peak learning rate.
        weight_decay: weight decay passed to the optimiser.
        optimizer: builds the optimiser from the parameters, ``lr`` and ``weight_decay``
            (a ``functools.partial`` from Hydra; default AdamW).
        scheduler: learning-rate shape over the run, stepped per batch: constant, cosine
            or linear decay to 0.
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        channels_last: run convolutions in channels-last memory format (much faster on CPU
            and on tensor cores).
    """

    def __init__(
        self,
        name: str = "resnet18",
        num_classes: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        optimizer: OptimizerFactory | None = None,
        scheduler: str = "cosine",
        label_smoothing: float = 0.0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        check_encoder_name(name)
        if num_classes < 2:
            raise ConfigError(
                f"pretraining needs at least 2 classes, but the data has {num_classes}. "
                "Use a dataset whose labels take two or more values."
            )
        if scheduler not in SCHEDULES:
            raise ConfigError(
                f"unknown classifier.scheduler {scheduler!r}; valid: {', '.join(SCHEDULES)}."
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(
                f"classifier.label_smoothing must be in [0, 1), got {label_smoothing}. "
                "Use e.g. classifier.label_smoothing=0.1."
            )
        self.name = name
        self.num_classes = num_classes
        self.net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_name = scheduler
        self.label_smoothing = label_smoothing
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.to(memory_format=self.memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of [0, 1] images ``(B, 3, H, W)``."""
        return self.net((images - self.mean) / self.std)

    def _step(
        self, batch: Any, batch_idx: int, accuracy: MulticlassAccuracy, stage: str
    ) -> torch.Tensor:
        images, labels = batch
        # Every datamodule labels a split entirely or not at all, so the first batch of each
        # epoch tells; checking only there spares a host sync per step. Unchecked, a -1
        # label fails as an opaque device-side assert in the cross-entropy kernel.
        if batch_idx == 0 and bool((labels < 0).any()):
            raise ConfigError(
                f"the {stage} split has unlabelled images (label -1), but pretraining needs "
                f"a label for every image: {_label_fix(self.trainer.datamodule)}."
            )
        logits = self(images.contiguous(memory_format=self.memory_format)).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        training = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=training,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not training,
            batch_size=labels.shape[0],
        )
        accuracy(logits.detach(), labels)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=not training)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, batch_idx, self.train_acc, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, batch_idx, self.val_acc, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, batch_idx, self.test_acc, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(
            self.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        total_steps = float(self.trainer.estimated_stepping_batches)

        def multiplier(step: int) -> float:
            return schedule_multiplier(self.scheduler_name, step, total_steps)

        scheduler = LambdaLR(optimizer, multiplier)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def save_encoder_weights(classifier: Classifier, path: Path) -> None:
    """Save the torchvision state dict as plain contiguous CPU tensors.

    The file loads with ``torch.load(..., weights_only=True)``: as an encoder with
    ``encoder.weights=PATH``, or into ``torchvision.models.get_model(name,
    num_classes=N)`` as a classifier.
    """
    state_dict = {
        key: value.detach().cpu().contiguous() for key, value in classifier.net.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)


def _label_fix(datamodule: pl.LightningDataModule | None) -> str:
    """How to give this kind of datamodule labels."""
    return next(
        (text for kind, text in _LABEL_FIXES.items() if isinstance(datamodule, kind)),
        "use a labelled dataset, e.g. data=cifar10",
    )


def _num_classes(datamodule: pl.LightningDataModule) -> int:
    """The datamodule's number of classes; a :class:`ConfigError` naming the fix if unlabelled."""
    num_classes = getattr(datamodule, "num_classes", None)
    if isinstance(num_classes, int):
        return num_classes
    raise ConfigError(
        f"pretraining needs labelled images, but {type(datamodule).__name__} has no labels: "
        f"{_label_fix(datamodule)}."
    )


def _best_val_acc(trainer: pl.Trainer, checkpoint: ModelCheckpoint | None) -> float | None:
    """The best ``val/acc`` when the checkpoint tracks it, else the last one logged."""
    if (
        checkpoint is not None
        and checkpoint.monitor == VAL_METRIC
        and checkpoint.best_model_score is not None
    ):
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(VAL_METRIC)
    return float(value) if value is not None else None


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Train a classifier, test its best checkpoint and save its weights for the encoder.

    Returns the summary that is also written to ``metrics.json``.
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
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    failed = True
    try:
        trainer.fit(classifier, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
        best_ckpt = (checkpoint.best_model_path or None) if checkpoint else None
        val_acc = _best_val_acc(trainer, checkpoint)
        # Testing a checkpoint loads its weights into ``classifier``: the weights saved
        # below are the best ones, not the last epoch's.
        results = trainer.test(classifier, datamodule=datamodule, ckpt_path=best_ckpt)
        test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}
        failed = False
    finally:
        finish_loggers(loggers, failed)

    weights_path = Path(cfg.output_weights).expanduser().resolve()
    summary = {
        "name": classifier.name,
        "num_classes": num_classes,
        "test/acc": test_metrics.get("test/acc"),
        "test/loss": test_metrics.get("test/loss"),
        VAL_METRIC: val_acc,
        "best_ckpt": best_ckpt,
        "weights_path": str(weights_path),
    }
    if trainer.is_global_zero:
        save_encoder_weights(classifier, weights_path)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("metrics written to %s", output_dir / "metrics.json")
        log.info(
            "encoder weights saved to %s; use encoder.weights=%s (with encoder=%s)",
            weights_path,
            weights_path,
            classifier.name,
        )
    return summary
