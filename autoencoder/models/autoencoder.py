"""The LightningModule: encoder, bottleneck, decoder, loss, metrics and named parameter groups."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from autoencoder.compat import attached_trainer, reapply_lr_lambdas
from autoencoder.errors import AutoencoderError, ConfigError, check_choice
from autoencoder.losses import ReconstructionLoss
from autoencoder.models.bottleneck import Bottleneck, LatentActivation
from autoencoder.models.decoders import Decoder
from autoencoder.models.encoders import Encoder
from autoencoder.models.nonfinite import NonfiniteAction, NonfiniteLoss
from autoencoder.models.shape import (
    ARCHITECTURE_KEY,
    ModelShape,
    check_growable,
    checkpoint_mismatch,
)
from autoencoder.models.steps import conv_memory_format, log_loss
from autoencoder.param_groups import (
    DECODER_GROUP,
    RatePolicy,
    Schedule,
    UniformRates,
    encoder_group,
    schedule_multiplier,
)

DecoderFactory = Callable[..., Decoder]
OptimizerFactory = Callable[..., Optimizer]
# The frozen feature network of the perceptual loss term, as Encoder arguments: VGG-16-BN's
# first three blocks (down to 1/8 resolution), as fastai's feature loss uses.
DEFAULT_PERCEPTUAL = MappingProxyType({"name": "vgg16_bn", "weights": "imagenet", "depth": 3})


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


def perceptual_network(config: Mapping[str, Any]) -> Encoder:
    """The perceptual loss term's feature network, with errors naming its config keys
    (``model.perceptual.weights``, not ``encoder.weights``)."""
    try:
        return Encoder(**config)
    except AutoencoderError as error:
        message = str(error).replace("encoder=", "model.perceptual.name=")
        raise type(error)(message.replace("encoder.", "model.perceptual.")) from None


class Autoencoder(pl.LightningModule):
    """A pretrained encoder, a conv bottleneck (1x1 or 3x3) and a learned decoder.

    Images go in and come out as [0, 1] pixels; ImageNet normalisation happens inside the
    encoder, so losses and metrics are comparable across encoders.

    Args:
        encoder: the backbone, cut into stages.
        decoder: builds the decoder, given ``latent_channels``, ``stage_channels`` and
            ``stage_reductions`` (a ``functools.partial`` of :class:`Decoder` from Hydra).
        latent_channels: channels of the latent map; the latent has
            ``latent_channels * (H / reduction) * (W / reduction)`` floats per image.
        lr: the decoder's (and bottleneck's) learning rate. The encoder stages' rates come
            from :attr:`rate_policy`, which the fine-tuning callback sets; without one, every
            group trains at ``lr``.
        optimizer: builds the optimiser from the parameter groups (default AdamW).
        scheduler: global learning-rate shape over the run: ``constant``, ``cosine`` or
            ``linear`` decay, or ``onecycle`` (warm-up, then cosine decay).
        loss: the weight of each loss term, ``mse``, ``l1``, ``ssim`` and ``perceptual``
            (:mod:`autoencoder.losses`); a term of weight 0 is not computed.
        perceptual: the frozen feature network of the ``perceptual`` term, as
            :class:`~autoencoder.models.encoders.Encoder` arguments (``name``, ``weights``:
            ``imagenet``, ``null`` or a PATH, ``depth``); built when training starts, and
            only when the term is used.
        bottleneck_kernel_size: the bottleneck conv's kernel, 1 (a per-position projection)
            or 3 (it also mixes neighbouring positions).
        bottleneck_activation: applied to the latent: ``none`` (a linear latent), ``relu``
            or ``tanh``.
        train_metrics_every_n_steps: compute the training metrics (MSE, MAE, PSNR, SSIM) on
            one batch in this many; the loss is logged every step. The metrics (SSIM most)
            add to the cost of a step, so the default samples. ``null``: never.
        channels_last: run convolutions in channels-last memory format (see
            :func:`~autoencoder.models.steps.conv_memory_format`).
        nonfinite_loss: what a NaN or infinite training loss does: ``stop`` raises a
            :class:`~autoencoder.errors.NonFiniteLossError` naming the step and the
            fine-tuning phase, looking at the losses kept on the device at the logging
            cadence and at every epoch's end (no host sync per step; the run stops within
            ``trainer.log_every_n_steps`` steps of the first bad one, before the epoch's
            checkpoints); ``skip`` skips that batch's update with a warning, which needs the
            loss on the host at every step (and, under DDP, agrees across ranks); ``ignore``
            does not check (a NaN loss then spoils the weights silently).
        compile: run the forward pass through ``torch.compile`` (for a GPU: the first steps,
            and the first after a change of phase or mode, compile; later ones run fused
            kernels). The weights and checkpoints are the same as without it.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: DecoderFactory = Decoder,
        latent_channels: int = 64,
        lr: float = 1e-3,
        optimizer: OptimizerFactory | None = None,
        scheduler: Schedule = "constant",
        loss: Mapping[str, float] = MappingProxyType(
            {"mse": 1.0, "l1": 0.0, "ssim": 0.0, "perceptual": 0.0}
        ),
        perceptual: Mapping[str, Any] = DEFAULT_PERCEPTUAL,
        bottleneck_kernel_size: int = 1,
        bottleneck_activation: LatentActivation = "none",
        train_metrics_every_n_steps: int | None = 50,
        channels_last: bool = True,
        nonfinite_loss: NonfiniteAction = "stop",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not lr > 0:  # also NaN
            raise ConfigError(f"model.lr must be > 0, got {lr}.")
        self.nonfinite_check = NonfiniteLoss(nonfinite_loss)
        check_choice("model.scheduler", scheduler, Schedule)
        if train_metrics_every_n_steps is not None and train_metrics_every_n_steps < 1:
            raise ConfigError(
                "model.train_metrics_every_n_steps must be >= 1 or null, got "
                f"{train_metrics_every_n_steps}."
            )
        self.encoder = encoder
        self.bottleneck = Bottleneck(
            encoder.out_channels[-1],
            latent_channels,
            kernel_size=bottleneck_kernel_size,
            activation=bottleneck_activation,
        )
        self.decoder = decoder(
            latent_channels=latent_channels,
            stage_channels=encoder.out_channels,
            stage_reductions=encoder.reductions,
        )
        self.latent_channels = latent_channels
        self.lr = lr
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_name = scheduler
        self.loss = ReconstructionLoss(loss, partial(perceptual_network, perceptual))
        self.train_metrics_every_n_steps = train_metrics_every_n_steps
        self.channels_last = channels_last
        # torch.compile of the forward pass (not of the modules: the weights keep their names)
        self._forward = torch.compile(self._reconstruct) if compile else self._reconstruct
        # Every group's peak rate and per-step multiplier; the fine-tuning callback replaces it.
        self.rate_policy: RatePolicy = UniformRates()
        self.bottleneck_info: dict[str, float] = {}
        self.train_metrics = _metrics("train/")
        self.val_metrics = _metrics("val/")
        self.test_metrics = _metrics("test/")
        self.to(memory_format=self.memory_format)

    # ----------------------------------------------------------------- shape bookkeeping
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of one image's latent, checking that the input size fits the encoder."""
        reduction = self.encoder.reduction
        if height % reduction or width % reduction:
            # a vision transformer downsamples by its patch size at every depth
            fix = (
                "a larger encoder.input_scale (one that divides the patch size, "
                f"{reduction * self.encoder.input_scale} px)"
                if getattr(self.encoder, "tokens", False)
                else "a shallower encoder.depth"
            )
            raise ConfigError(
                f"image size {height}x{width} is not divisible by the encoder's downsampling "
                f"({reduction}x for {self.encoder.name} at depth {self.encoder.depth}). "
                f"Nearest valid sizes: {_nearest_multiples(height, reduction)}; set "
                f"data.image_size=N, or use {fix}."
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
        if stage == "fit":
            self.loss.prepare()  # a missing perceptual network fails here, before training

    def configure_callbacks(self) -> list[pl.Callback]:
        return [self.nonfinite_check]

    def on_fit_start(self) -> None:
        counts = {
            f"params/{group['name']}": sum(p.numel() for p in group["params"])
            for group in self.parameter_groups()
        }
        for logger in self.loggers:
            logger.log_hyperparams({**counts, **self.bottleneck_info})

    def on_train_start(self) -> None:
        """Every group at the rate the config's schedule gives at the restored step, from the
        first step of a resumed run: the optimiser's state brings back the rates of the step
        it was saved at, so a resume with another ``model.scheduler`` (a constant run
        annealed, say) would train its first step at the old rate."""
        for config in self.trainer.lr_scheduler_configs:
            reapply_lr_lambdas(config.scheduler)

    # ------------------------------------------------------------------------- forward
    @property
    def memory_format(self) -> torch.memory_format:
        """The layout inputs are given in: the one the weights are in."""
        return conv_memory_format(self.channels_last)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.encoder(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward(images)

    def _reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(images))

    def reconstruction_loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The images of ``batch``, their reconstructions and the loss, as every step
        computes them."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        reconstruction = self(images.contiguous(memory_format=self.memory_format))
        return images, reconstruction, self.loss(reconstruction.float(), images)

    @staticmethod
    def update_metrics(
        metrics: MetricCollection, reconstruction: torch.Tensor, images: torch.Tensor
    ) -> None:
        """Add a batch to ``metrics``. torchmetrics flattens with ``.view()``, which needs the
        default memory layout; in fp32 under bf16-mixed too (autocast would run SSIM's filter
        in bf16)."""
        with torch.autocast(images.device.type, enabled=False):
            metrics.update(reconstruction.detach().float().contiguous(), images.float())

    def _step(
        self, batch: Any, metrics: MetricCollection, stage: str, with_metrics: bool = True
    ) -> torch.Tensor | None:
        images, reconstruction, loss = self.reconstruction_loss(batch)
        if stage == "train" and self.nonfinite_check.skips(self, loss):
            return None  # Lightning skips the backward pass and the update
        log_loss(self, stage, loss, batch_size=images.shape[0])
        if with_metrics:
            self.update_metrics(metrics, reconstruction, images)
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def phase_description(self) -> str:
        """The fine-tuning phase for messages, as the rate policy tells it."""
        phase = self.rate_policy.phase
        if phase is None:
            return "no fine-tuning phases"
        state = "encoder frozen" if phase == 1 else "encoder unfrozen"
        return f"fine-tuning phase {phase} ({state})"

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        every = self.train_metrics_every_n_steps
        # batch_idx counts within the epoch: the first batch of every epoch is measured
        sampled = every is not None and batch_idx % every == 0
        return self._step(batch, self.train_metrics, "train", with_metrics=sampled)

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
        trainer = attached_trainer(self)
        total_steps = float(trainer.estimated_stepping_batches) if trainer is not None else 0.0
        scheduler = LambdaLR(optimizer, [self._multiplier_fn(name, total_steps) for name in names])
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _multiplier_fn(self, name: str, total_steps: float) -> Callable[[int], float]:
        # Plain closures: LambdaLR leaves functions out of its state dict, and the policy's
        # own state is saved by whoever owns it (the fine-tuning callback). The policy is
        # read at every step, so the callback may replace it after this ran.
        def multiplier(step: int) -> float:
            return self.rate_policy.multiplier(name, step) * schedule_multiplier(
                self.scheduler_name, step, total_steps
            )

        return multiplier

    # ------------------------------------------------------------------ checkpoints
    @property
    def shape(self) -> ModelShape:
        """The settings that decide the shapes of the weights."""
        return ModelShape(
            encoder=self.encoder.geometry,
            latent_channels=self.latent_channels,
            bottleneck_kernel_size=self.bottleneck.kernel_size[0],
            bottleneck_activation=self.bottleneck.activation_name,
            decoder=tuple(self.decoder.settings().items()),
        )

    def architecture(self) -> dict[str, Any]:
        """The checkpoint's record: the shape as config keys, and the optimiser (whose state
        a resume loads)."""
        optimizer = getattr(self.optimizer_factory, "func", self.optimizer_factory)
        return {
            **self.shape.config_keys(),
            "optimizer": getattr(optimizer, "__name__", type(optimizer).__name__),
        }

    def checkpoint_mismatch(self, checkpoint: Mapping[str, Any], optimizer: bool = True) -> str:
        """Why ``checkpoint`` cannot be loaded into this model ("" when it can); see
        :func:`~autoencoder.models.shape.checkpoint_mismatch`."""
        return checkpoint_mismatch(checkpoint, self.architecture(), self.state_dict(), optimizer)

    def load_grown(
        self, state_dict: Mapping[str, Any], source: str = "the checkpoint"
    ) -> list[str]:
        """Load the weights of a smaller (or the same) model; return the names of this
        model's weights that ``state_dict`` lacks, which keep their initialisation.

        For a model grown from a trained one: with ``decoder.block=residual``, a block added
        by a larger ``decoder.blocks_per_stage`` starts as the identity, so the grown model
        first computes what the trained one did. A weight of another shape, or one this model
        lacks (trained weights that would be dropped), raises :class:`ConfigError`.
        """
        check_growable(state_dict, self.state_dict(), source)
        return sorted(self.load_state_dict(state_dict, strict=False).missing_keys)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[ARCHITECTURE_KEY] = self.architecture()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another model with the settings that differ, before
        Lightning's ``load_state_dict`` fails with a list of tensor shapes."""
        problem = self.checkpoint_mismatch(checkpoint)
        if problem:
            trainer = attached_trainer(self)
            path = trainer.ckpt_path if trainer is not None else None
            raise ConfigError(
                f"ckpt_path={path} {problem}. Resume with the config of the run that wrote it "
                "(the overrides in its .hydra/overrides.yaml), or train without ckpt_path."
            )


def _nearest_multiples(size: int, multiple: int) -> str:
    below = max(multiple, size // multiple * multiple)
    above = below + multiple if below <= size else below
    return " or ".join(str(s) for s in sorted({below, above}))
