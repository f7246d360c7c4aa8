"""The LightningModule: encoder, bottleneck, decoder, loss, metrics and named parameter groups."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from autoencoder.errors import ConfigError
from autoencoder.losses import ReconstructionLoss
from autoencoder.models.decoders import Decoder
from autoencoder.models.encoders import Encoder
from autoencoder.param_groups import (
    DECODER_GROUP,
    RatePolicy,
    UniformRates,
    encoder_group,
    schedule_multiplier,
)

DecoderFactory = Callable[..., Decoder]
OptimizerFactory = Callable[..., Optimizer]


def _metrics(prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "mae": MeanAbsoluteError(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        },
        prefix=prefix,
    )


class Autoencoder(pl.LightningModule):
    """A pretrained encoder, a 1x1-conv bottleneck and a learned decoder.

    Images go in and come out as [0, 1] pixels; ImageNet normalisation happens inside the
    encoder, so losses and metrics are comparable across encoders.

    Args:
        encoder: the backbone, cut into stages.
        decoder: builds the decoder, given ``latent_channels``, ``stage_channels`` and
            ``stage_reductions`` (a ``functools.partial`` of :class:`Decoder` from Hydra).
        latent_channels: channels of the latent map; the latent has
            ``latent_channels * (H / reduction) * (W / reduction)`` floats per image.
        lr: the decoder's (and bottleneck's) learning rate. The encoder stages' rates are
            set by the fine-tuning callback; without one, every group trains at ``lr``.
        optimizer: builds the optimiser from the parameter groups (default AdamW).
        scheduler: global learning-rate shape over the run: constant, cosine or linear.
        loss: weights of the loss terms, e.g. ``{"mse": 1.0, "ssim": 0.1}``.
        channels_last: run convolutions in channels-last memory format (much faster on CPU
            and on tensor cores).
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: DecoderFactory = Decoder,
        latent_channels: int = 64,
        lr: float = 1e-3,
        optimizer: OptimizerFactory | None = None,
        scheduler: str = "constant",
        loss: Mapping[str, float] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if latent_channels < 1:
            raise ConfigError(f"model.latent_channels must be >= 1, got {latent_channels}.")
        self.encoder = encoder
        self.bottleneck = nn.Conv2d(encoder.out_channels[-1], latent_channels, kernel_size=1)
        self.decoder = decoder(
            latent_channels=latent_channels,
            stage_channels=encoder.out_channels,
            stage_reductions=encoder.reductions,
        )
        self.latent_channels = latent_channels
        self.lr = lr
        self.optimizer_factory = optimizer or torch.optim.AdamW
        schedule_multiplier(scheduler, 0, 1.0)  # validates the name early
        self.scheduler_name = scheduler
        self.loss = ReconstructionLoss(loss)
        self.channels_last = channels_last
        self.rate_policy: RatePolicy = UniformRates()
        self.bottleneck_info: dict[str, float] = {}
        self.train_metrics = _metrics("train/")
        self.val_metrics = _metrics("val/")
        self.test_metrics = _metrics("test/")
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------- shape bookkeeping
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of one image's latent, checking that the input size fits the encoder."""
        reduction = self.encoder.reduction
        if height % reduction or width % reduction:
            raise ConfigError(
                f"image size {height}x{width} is not divisible by the encoder's downsampling "
                f"({reduction}x for {self.encoder.name} at depth {self.encoder.depth}). "
                f"Nearest valid sizes: {_nearest_multiples(height, reduction)}; set "
                f"data.image_size=N, or use a shallower encoder.depth."
            )
        return self.latent_channels, height // reduction, width // reduction

    def bottleneck_summary(self, height: int, width: int) -> dict[str, float]:
        channels, h, w = self.latent_shape(height, width)
        latent_floats = channels * h * w
        return {
            "latent_floats": latent_floats,
            "compression_ratio": 3 * height * width / latent_floats,
        }

    def setup(self, stage: str) -> None:
        shape = getattr(getattr(self.trainer, "datamodule", None), "image_shape", None)
        if shape is not None and not self.bottleneck_info:
            height, width = shape[-2:]
            self.bottleneck_info = self.bottleneck_summary(height, width)
            channels, h, w = self.latent_shape(height, width)
            rank_zero_info(
                f"bottleneck: {height}x{width}x3 images -> latent {channels}x{h}x{w} = "
                f"{self.bottleneck_info['latent_floats']} floats per image, compression "
                f"{self.bottleneck_info['compression_ratio']:.1f}x"
            )

    def on_fit_start(self) -> None:
        counts = {
            f"params/{group['name']}": sum(p.numel() for p in group["params"])
            for group in self.parameter_groups()
        }
        for logger in self.loggers:
            logger.log_hyperparams({**counts, **self.bottleneck_info})

    def on_validation_model_train(self) -> None:
        """Back to training mode after validation with ``train()``, not Lightning's restore
        of the modes from before validation: the encoder re-applies its BatchNorm policy,
        which the fine-tuning callback may have changed at the end of this validation."""
        self.train()

    # ------------------------------------------------------------------------- forward
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.encoder(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(images))

    def _step(self, batch: Any, metrics: MetricCollection, stage: str) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        reconstruction = self(images.contiguous(memory_format=memory_format))
        loss = self.loss(reconstruction.float(), images)
        # torchmetrics flattens with .view(), which needs the default memory layout.
        metrics.update(reconstruction.detach().float().contiguous(), images)
        training = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=training,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not training,
            batch_size=images.shape[0],
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.test_metrics, "test")

    # ------------------------------------------------------------- parameter groups
    def parameter_groups(self) -> list[dict[str, Any]]:
        """One named group for decoder + bottleneck, one per encoder stage (lowest first)."""
        decoder_params = [*self.bottleneck.parameters(), *self.decoder.parameters()]
        groups = [{"name": DECODER_GROUP, "params": decoder_params}]
        for stage, module in self.encoder.stages.items():
            groups.append({"name": encoder_group(stage), "params": list(module.parameters())})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self.parameter_groups()
        names = [group["name"] for group in groups]
        peaks = self.rate_policy.peak_rates(names, self.lr)
        for group in groups:
            group["lr"] = peaks[group["name"]]
        optimizer = self.optimizer_factory(groups)
        total_steps = float(self.trainer.estimated_stepping_batches) if self._trainer else 0.0
        scheduler = LambdaLR(optimizer, [self._multiplier_fn(name, total_steps) for name in names])
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _multiplier_fn(self, name: str, total_steps: float) -> Callable[[int], float]:
        # Plain closures: LambdaLR leaves functions out of its state dict, and the policy's
        # own state is saved by the callback that owns it.
        def multiplier(step: int) -> float:
            return self.rate_policy.multiplier(name, step) * schedule_multiplier(
                self.scheduler_name, step, total_steps
            )

        return multiplier

    def refresh_learning_rates(self) -> None:
        """Re-evaluate every group's rate now, after the rate policy changed mid-step."""
        scheduler = self.lr_schedulers()
        step = scheduler.last_epoch
        for group, base, fn in zip(
            scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * fn(step)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]

    def current_rates(self) -> dict[str, float]:
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        return {group["name"]: group["lr"] for group in optimizer.param_groups}


def _nearest_multiples(size: int, multiple: int) -> str:
    below = max(multiple, size // multiple * multiple)
    above = below + multiple if below <= size else below
    return " or ".join(str(s) for s in sorted({below, above}))
