"""Training callbacks: reconstructions of a fixed set of images, logged as grids; an
exponential moving average of the weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, WeightAveraging
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate
from typing_extensions import override

from autoencoder.compat import copy_all_, lerp_all_
from autoencoder.errors import ConfigError
from autoencoder.grids import comparison_grid
from autoencoder.models.steps import evaluating

LAYOUT = "each row of images above its reconstructions"


def ema_decay(decay: float, num_averaged: torch.Tensor, warmup_power: float | None) -> torch.Tensor:
    """The average's decay at an update, given the updates so far (``num_averaged``, a
    tensor on the average's device, so the step never waits for the device): ``decay``, or
    with a warm-up ``min(decay, 1 - (1 + num_averaged) ** -warmup_power)`` (timm's
    ``ModelEmaV3`` warm-up, gamma 1), so that the first updates average over the few steps
    there are instead of keeping most of the initialisation."""
    constant = torch.full_like(num_averaged, decay, dtype=torch.float32)
    if warmup_power is None:
        return constant
    ramp = 1.0 - (1.0 + num_averaged.float()) ** -warmup_power
    return torch.minimum(constant, ramp)


def warmup_ema_multi_avg_fn(
    decay: float, warmup_power: float | None
) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """The in-place update of :class:`~torch.optim.swa_utils.AveragedModel` (one call per
    device and dtype) for an EMA whose decay follows :func:`ema_decay` of the updates so far
    (``n_averaged``, which the average keeps in its state, so a resumed run continues the
    same ramp). Integer buffers (BatchNorm's batch counts) take the current value, as
    torch's own ``get_ema_multi_avg_fn`` does for them."""

    @torch.no_grad()
    def update(
        averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor
    ) -> None:
        if not averaged[0].is_floating_point():
            copy_all_(averaged, current)
            return
        weight = 1.0 - ema_decay(decay, num_averaged, warmup_power)
        lerp_all_(averaged, current, weight.to(averaged[0].dtype))

    return update


class EMAWeights(WeightAveraging):
    """An exponential moving average of the weights, on Lightning's
    :class:`~pytorch_lightning.callbacks.WeightAveraging` (as its `EMAWeightAveraging`): validation,
    checkpoints (their ``state_dict``), testing and everything that loads a checkpoint use
    the averaged weights; ``last.ckpt`` also keeps the current ones, so a resumed run
    continues both.

    Two changes:

    * The decay ramps up with the number of updates (``warmup_power``, timm's EMA warm-up):
      a constant 0.99 from step 0 would leave ``0.99**80 = 45%`` of the random
      initialisation in the average after 80 steps, and ruin any run of a few hundred steps.
      With the warm-up the average's horizon grows with the run (about ``n**warmup_power``
      steps after ``n`` updates) until it reaches ``1 / (1 - decay)``.
    * Lightning's callback also swaps the *current* weights back in when
      ``trainer.test(ckpt_path=...)`` or ``trainer.validate(ckpt_path=...)`` loads a
      checkpoint after a fit, so the test of the best checkpoint would measure the weights
      that were not averaged. Outside fitting, this callback leaves the averaged weights that
      the checkpoint's ``state_dict`` holds.

    Frozen encoder stages are averaged like the rest: an average of a constant is that
    constant, so they stay the pretrained weights until phase 2 moves them.

    Args:
        decay: the average's weight on its previous value per step, once warmed up; its
            horizon is about ``1 / (1 - decay)`` steps (0.99: 100 steps, two thirds of an
            epoch of 5,000 images at batch 32; 0.999: 1,000 steps, for runs of tens of
            thousands of steps).
        warmup_power: the power of the warm-up (timm's default 2/3; 3/4 warms up faster);
            ``None``: the constant ``decay`` from the first update, as Lightning's callback.
        update_starting_at_step: the first optimiser step that enters the average.
    """

    def __init__(
        self,
        decay: float = 0.99,
        warmup_power: float | None = 2 / 3,
        update_starting_at_step: int | None = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be in (0, 1), got {decay}.")
        if warmup_power is not None and not warmup_power > 0:
            raise ConfigError(
                f"callbacks.ema.warmup_power must be > 0, or null for no warm-up; got "
                f"{warmup_power}."
            )
        # Lightning's WeightAveraging with the foreach update (Lightning's EMA subclass fixes
        # a per-tensor avg_fn of a constant decay)
        super().__init__(multi_avg_fn=warmup_ema_multi_avg_fn(decay, warmup_power))
        self.decay = decay
        self.warmup_power = warmup_power
        self.update_starting_at_step = update_starting_at_step

    @override
    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every optimiser step from ``update_starting_at_step`` on (as Lightning's
        ``EMAWeightAveraging``), never at an epoch's end."""
        start = self.update_starting_at_step
        return step_idx is not None and (start is None or step_idx >= start)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    # Validation swaps the average in only while fitting: a checkpoint validated after the
    # fit (the record's validation of the returned model) holds its own average as weights.
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_start(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)


class ReconstructionImages(Callback):
    """Log the first ``num_images`` validation images beside their reconstructions.

    The same images are shown at every validation (taken once from the validation set and
    kept on the module's device), so the grids show how the reconstructions improve; after
    testing, the first ``num_images`` test images are shown too. Grids go to every W&B
    logger with ``log_image`` (keys ``val/reconstructions`` and ``test/reconstructions``);
    without one they are saved as ``dirpath/val_epoch{NNN}.png`` and ``dirpath/test.png``.
    Only rank 0 computes and logs them.

    Args:
        dirpath: folder for the PNG files when no W&B logger is attached.
        num_images: images per grid.
    """

    def __init__(self, dirpath: str | Path, num_images: int = 16) -> None:
        if num_images < 1:
            raise ConfigError(
                f"callbacks.reconstructions.num_images must be >= 1, got {num_images}."
            )
        self.num_images = num_images
        self.dirpath = Path(dirpath)
        self._val_images: torch.Tensor | None = None

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the grids follow training: not the sanity check, nor a checkpoint validated again
        # after the fit (the record's validation of the returned model)
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if not trainer.is_global_zero:
            return
        if self._val_images is None:
            self._val_images = self._first_images(trainer.val_dataloaders).to(pl_module.device)
        epoch = trainer.current_epoch
        self._log(
            trainer,
            pl_module,
            self._val_images,
            key="val/reconstructions",
            caption=f"epoch {epoch}, step {trainer.global_step}; {LAYOUT}",
            filename=f"val_epoch{epoch:03d}.png",
        )

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        images = self._first_images(trainer.test_dataloaders).to(pl_module.device)
        self._log(
            trainer,
            pl_module,
            images,
            key="test/reconstructions",
            caption=f"test set; {LAYOUT}",
            filename="test.png",
        )

    def _first_images(self, dataloaders: DataLoader | list[DataLoader]) -> torch.Tensor:
        """The first images of the (first) loader's dataset: the same ones on every call,
        whatever the loader's sampler and workers do."""
        loader = dataloaders[0] if isinstance(dataloaders, list) else dataloaders
        dataset = loader.dataset
        count = min(self.num_images, len(dataset))
        batch = default_collate([dataset[index] for index in range(count)])
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def _log(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: torch.Tensor,
        key: str,
        caption: str,
        filename: str,
    ) -> None:
        grid, _ = comparison_grid(images.cpu(), reconstruct(trainer, pl_module, images).cpu())
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        for logger in wandb_loggers:
            pixels = np.asarray(grid)
            logger.log_image(key=key, images=[pixels], caption=[caption], step=trainer.global_step)
        if not wandb_loggers:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            grid.save(self.dirpath / filename)


def reconstruct(
    trainer: pl.Trainer, pl_module: pl.LightningModule, images: torch.Tensor
) -> torch.Tensor:
    """Reconstructions in eval mode without gradients; every submodule's mode is restored
    afterwards (:func:`~autoencoder.models.steps.evaluating`)."""
    with evaluating(pl_module), torch.no_grad(), trainer.precision_plugin.forward_context():
        return pl_module(images).float().clamp(0.0, 1.0)
