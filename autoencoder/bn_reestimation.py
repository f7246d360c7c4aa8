"""Keep a pretrained model's BatchNorm statistics in step with new images (AdaBN).

A model trained on other images carries their BatchNorm running means and variances. Adapted
to a new set, the layers that normalise with those statistics (every BatchNorm in eval mode:
validation, and the frozen stages while training) see inputs whose statistics differ, and the
first steps spend themselves correcting that: the epoch-1 dip of an adapted run. AdaBN (Li et
al., 2016, "Revisiting Batch Normalization For Practical Domain Adaptation") re-estimates the
statistics on the target images instead: one pass over the training images in train mode,
without a gradient step, with the running statistics reset and averaged over the whole pass
(``momentum=None``). The weights do not move.

:class:`ReestimateBatchNorm` does that pass before the first optimiser step
(``reestimate_bn=true``), after :class:`~autoencoder.start_score.StartScore` has scored and
saved the untouched start, so a run that returns its start returns the model it was given.
The pass is that of :func:`torch.optim.swa_utils.update_bn` (what SWA uses to refresh the
statistics of an averaged model), with two differences: every module is put in train mode
directly, since an encoder's ``train()`` keeps its frozen stages' BatchNorm in eval (which
``update_bn`` would reset and never update), and the forward passes run in the trainer's
precision. Under DDP each rank passes over its own shard and the ranks' statistics are then
averaged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]


def _images(loader: Iterable[Any], device: torch.device) -> Iterator[torch.Tensor]:
    for batch in loader:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        yield images.to(device)


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, loader: Iterable[Any], device: torch.device, context: Any = None
) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` by those of the
    images of ``loader`` (``(images, labels)`` batches or image batches), passed once through
    ``model`` in train mode; the weights and every module's train/eval mode are as before.

    Args:
        context: a context manager the forward passes run in (the trainer's precision).

    Returns:
        The number of BatchNorm layers re-estimated (0: the model has none).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    modes = {module: module.training for module in model.modules()}
    momenta = {layer: layer.momentum for layer in layers}
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # a cumulative average over the pass
        for module in modes:  # not model.train(): an encoder keeps its pinned layers in eval
            module.training = True
        with context if context is not None else contextlib.nullcontext():
            for images in _images(loader, device):
                model(images)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        for module, training in modes.items():
            module.training = training
    return len(layers)


class ReestimateBatchNorm(Callback):
    """AdaBN before the first step: the BatchNorm statistics of the whole model (encoder and
    decoder) re-estimated on the run's training images (see the module docstring).

    A resumed run does not pass again: its checkpoint holds the statistics the first part
    re-estimated and then trained with.
    """

    def __init__(self) -> None:
        self.done = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.done or trainer.global_step > 0:
            return
        self.done = True
        loader = trainer.train_dataloader
        count = reestimate_batchnorm(
            pl_module, loader, pl_module.device, trainer.precision_plugin.forward_context()
        )
        if count == 0:
            rank_zero_warn(
                "reestimate_bn=true: the model has no BatchNorm layer with running statistics; "
                "nothing was re-estimated (use reestimate_bn=false)."
            )
            return
        if trainer.world_size > 1:
            for layer in batchnorm_layers(pl_module):
                layer.running_mean.copy_(trainer.strategy.reduce(layer.running_mean, "mean"))
                layer.running_var.copy_(trainer.strategy.reduce(layer.running_var, "mean"))
        rank_zero_info(
            f"reestimate_bn: the running statistics of {count} BatchNorm layers re-estimated "
            f"on the training images ({len(loader)} batches, no step taken)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict.get("done", False))
