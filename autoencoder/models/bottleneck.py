"""The bottleneck: encoder features to the latent map, by one conv and an activation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from autoencoder.errors import ConfigError, check_choice

LatentActivation = Literal["none", "relu", "tanh"]
LATENT_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "none": nn.Identity,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
}


class Bottleneck(nn.Conv2d):
    """A 1x1 or 3x3 conv (same padding) to ``latent_channels``, then the latent activation.

    It is the conv itself rather than a module holding one, so its weights keep the names
    ``bottleneck.weight`` and ``bottleneck.bias`` that checkpoints and exported encoders
    written before this class existed use; the activation has no weights.

    Args:
        in_channels: channels of the encoder's last stage.
        latent_channels: channels of the latent map.
        kernel_size: 1 (a per-position projection) or 3 (it also mixes neighbouring
            positions).
        activation: applied to the latent: ``none`` (a linear latent), ``relu`` or ``tanh``.
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        kernel_size: int = 1,
        activation: LatentActivation = "none",
    ) -> None:
        if latent_channels < 1:
            raise ConfigError(f"model.latent_channels must be >= 1, got {latent_channels}.")
        if kernel_size not in (1, 3):
            raise ConfigError(f"model.bottleneck_kernel_size must be 1 or 3, got {kernel_size}.")
        check_choice("model.bottleneck_activation", activation, LatentActivation)
        super().__init__(in_channels, latent_channels, kernel_size, padding=kernel_size // 2)
        self.activation_name = activation
        self.activation = LATENT_ACTIVATIONS[activation]()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.activation(super().forward(features))
