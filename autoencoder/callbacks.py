"""Training callbacks: reconstructions of a fixed set of images, logged as grids; an
exponential moving average of the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

from autoencoder.errors import ConfigError
from autoencoder.grids import comparison_grid

LAYOUT = "each row of images above its reconstructions"


class EMAWeights(EMAWeightAveraging):
    """Lightning's :class:`~pytorch_lightning.callbacks.EMAWeightAveraging`: validation,
    checkpoints (their ``state_dict``), testing and everything that loads a checkpoint use
    the averaged weights; ``last.ckpt`` also keeps the current ones, so a resumed run
    continues both.

    One change: Lightning's callback also swaps the *current* weights back in when
    ``trainer.test(ckpt_path=...)`` or ``trainer.validate(ckpt_path=...)`` loads a checkpoint
    after a fit, so the test of the best checkpoint would measure the weights that were not
    averaged. Outside fitting, this callback leaves the averaged weights that the checkpoint's
    ``state_dict`` holds.

    Frozen encoder stages are averaged like the rest: an average of a constant is that
    constant, so they stay the pretrained weights until phase 2 moves them.

    Args:
        decay: the average's weight on its previous value per step; its horizon is about
            ``1 / (1 - decay)`` steps (0.99: 100 steps, two thirds of an epoch of 5,000
            images at batch 32; 0.999: 1,000 steps, for runs of tens of thousands of steps).
            Keep the horizon well under the run's length.
        update_starting_at_step: the first optimiser step that enters the average.
    """

    def __init__(self, decay: float = 0.99, update_starting_at_step: int | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be in (0, 1), got {decay}.")
        super().__init__(decay=decay, update_starting_at_step=update_starting_at_step)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


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

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
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
    afterwards exactly (frozen BatchNorm layers stay in eval mode during training)."""
    modes = [(module, module.training) for module in pl_module.modules()]
    pl_module.eval()
    try:
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            return pl_module(images).float().clamp(0.0, 1.0)
    finally:
        for module, training in modes:
            module.training = training
