"""An image classifier on [0, 1] pixels: the torchvision network an encoder is cut from.

:func:`autoencoder.pretrain.pretrain` trains it ("develop a model" transfer learning);
``scripts/evaluate.py`` uses it to measure how much of what a classifier needs survives
reconstruction. Its state dict is torchvision's, so it loads as an
:class:`~autoencoder.models.encoders.Encoder` (the head is ignored there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.classification import MulticlassAccuracy

from autoencoder.errors import ConfigError, check_choice
from autoencoder.models.encoder_spec import IMAGENET_MEAN, IMAGENET_STD
from autoencoder.models.encoders import check_input_scale, remove_stem_pool, scale_input
from autoencoder.models.registry import check_encoder_name
from autoencoder.models.steps import conv_memory_format, log_loss
from autoencoder.param_groups import Schedule, schedule_multiplier

OptimizerFactory = Callable[..., Optimizer]
_DEFAULT_LABELS_HINT = "use a labelled dataset, e.g. data=cifar10"


def labels_hint(datamodule: pl.LightningDataModule | None) -> str:
    """How to give this datamodule's images labels (its ``labels_hint``, if it has one)."""
    return getattr(datamodule, "labels_hint", None) or _DEFAULT_LABELS_HINT


class Classifier(pl.LightningModule):
    """A torchvision ResNet or VGG classifier on [0, 1] pixels.

    Inputs are normalised with the ImageNet mean and std inside :meth:`forward`, exactly as
    :class:`~autoencoder.models.encoders.Encoder` does, so the features the network learns
    here are the ones it computes after transfer. ``net`` is the unmodified torchvision model
    (``torchvision.models.get_model(name, num_classes=num_classes)``); VGG's adaptive average
    pool lets it run on images as small as 32 px.

    Args:
        name: an encoder of :data:`~autoencoder.models.registry.ENCODERS` that torchvision
            has as a classifier (every ResNet and VGG).
        num_classes: number of label classes (at least 2).
        lr: peak learning rate.
        weight_decay: weight decay passed to the optimiser.
        optimizer: builds the optimiser from the parameters, ``lr`` and ``weight_decay``
            (a ``functools.partial`` from Hydra; default AdamW).
        scheduler: learning-rate shape over the run, stepped per batch: constant, cosine
            or linear decay to 0.
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        channels_last: run convolutions in channels-last memory format (see
            :func:`~autoencoder.models.steps.conv_memory_format`).
        stem_pool, input_scale: the input geometry, as the encoder options of the same names:
            pretrain with the geometry the encoder will be used with.
    """

    def __init__(
        self,
        name: str = "resnet18",
        num_classes: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        optimizer: OptimizerFactory | None = None,
        scheduler: Schedule = "cosine",
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        stem_pool: bool = True,
        input_scale: int = 1,
    ) -> None:
        super().__init__()
        check_input_scale(input_scale)
        torchvision_name = check_encoder_name(name).torchvision_name
        if torchvision_name is None:
            raise ConfigError(
                f"encoder {name} is not a torchvision classifier, so it cannot be pretrained "
                "here; pretrain it elsewhere and pass its state dict as encoder.weights=PATH."
            )
        if num_classes < 2:
            raise ConfigError(
                f"pretraining needs at least 2 classes, but the data has {num_classes}. "
                "Use a dataset whose labels take two or more values."
            )
        check_choice("classifier.scheduler", scheduler, Schedule)
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(
                f"classifier.label_smoothing must be in [0, 1), got {label_smoothing}. "
                "Use e.g. classifier.label_smoothing=0.1."
            )
        self.name = name
        self.num_classes = num_classes
        self.net = torchvision.models.get_model(torchvision_name, num_classes=num_classes)
        if not stem_pool:
            remove_stem_pool(name, [self.net])
        self.stem_pool = stem_pool
        self.input_scale = input_scale
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_name = scheduler
        self.label_smoothing = label_smoothing
        self.memory_format = conv_memory_format(channels_last)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.to(memory_format=self.memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of [0, 1] images ``(B, 3, H, W)``."""
        return self.net(scale_input((images - self.mean) / self.std, self.input_scale))

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
                f"a label for every image: {labels_hint(self.trainer.datamodule)}."
            )
        logits = self(images.contiguous(memory_format=self.memory_format)).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        training = stage == "train"
        log_loss(self, stage, loss, batch_size=labels.shape[0])
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
