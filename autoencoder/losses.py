"""Reconstruction losses on [0, 1] pixels, combinable as weighted sums."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from autoencoder.errors import ConfigError


def ssim_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM``, with the SSIM of torchmetrics on a [0, 1] data range."""
    return 1.0 - structural_similarity_index_measure(reconstruction, target, data_range=1.0)


LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "ssim": ssim_loss}


class ReconstructionLoss(nn.Module):
    """A weighted sum of named losses, e.g. ``{"mse": 1.0, "ssim": 0.1}``."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(weights or {"mse": 1.0})
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ConfigError(
                f"unknown loss term(s) {unknown}. Valid terms: {', '.join(LOSSES)}; set e.g. "
                f"model.loss={{mse:1.0,ssim:0.1}}."
            )
        self.weights = {name: float(weight) for name, weight in weights.items()}

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * LOSSES[name](reconstruction, target) for name, w in self.weights.items())
