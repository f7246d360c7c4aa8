"""What the steps of the project's LightningModules share: the memory layout their inputs
are given in, and how they log their loss."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def conv_memory_format(channels_last: bool) -> torch.memory_format:
    """Channels-last (NHWC, the layout that CPU and tensor-core convolution kernels take) or
    the default layout."""
    return torch.channels_last if channels_last else torch.contiguous_format


def log_loss(module: pl.LightningModule, stage: str, loss: torch.Tensor, batch_size: int) -> None:
    """Log ``<stage>/loss``: every step and per epoch in training, per epoch (averaged over the
    ranks) in validation and testing."""
    training = stage == "train"
    module.log(
        f"{stage}/loss",
        loss,
        on_step=training,
        on_epoch=True,
        prog_bar=True,
        sync_dist=not training,
        batch_size=batch_size,
    )
