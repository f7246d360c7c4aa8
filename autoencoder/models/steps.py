"""What the steps of the project's LightningModules share: the memory layout their inputs
are given in, how they log their loss, and an eval-mode pass that leaves the modes as it
found them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from torch import nn


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


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the block; every submodule's mode is restored afterwards
    exactly (frozen BatchNorm layers stay in eval mode during training, which
    ``module.train()`` would undo)."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training
