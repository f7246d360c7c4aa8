"""Learned upsampling decoders built from an encoder's stage channels.

The decoder mirrors the encoder: one block per encoder stage, from the top down, each
undoing that stage's downsampling and producing the channels of the stage below it. There
are no skip connections: everything the decoder sees passes through the bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from autoencoder.errors import ConfigError, check_choice

Upsample = Literal["resize_conv", "pixel_shuffle", "transposed"]
UPSAMPLE_MODES: tuple[str, ...] = get_args(Upsample)


def icnr_(weight: torch.Tensor, scale: int) -> torch.Tensor:
    """ICNR initialisation for a conv followed by ``PixelShuffle(scale)`` (Aitken et al. 2017).

    Every group of ``scale**2`` output channels that the shuffle spreads over one output
    pixel block starts with the same kernel, so the layer begins as a nearest-neighbour
    upsampling of a normally initialised conv: no checkerboard artefacts at the start.
    """
    out_channels = weight.shape[0]
    sub_kernel = torch.empty(out_channels // scale**2, *weight.shape[1:])
    nn.init.kaiming_normal_(sub_kernel, nonlinearity="relu")
    with torch.no_grad():
        weight.copy_(sub_kernel.repeat_interleave(scale**2, dim=0))
    return weight


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def upsample_block(
    in_channels: int, out_channels: int, scale: int, mode: Upsample
) -> nn.Sequential:
    """Upsample by ``scale`` (1 = none) and map ``in_channels`` to ``out_channels``."""
    if scale == 1:
        return conv_bn_relu(in_channels, out_channels)
    if mode == "resize_conv":
        return nn.Sequential(
            nn.Upsample(scale_factor=scale, mode="nearest"),
            *conv_bn_relu(in_channels, out_channels),
        )
    if mode == "pixel_shuffle":
        conv = nn.Conv2d(in_channels, out_channels * scale**2, 3, padding=1, bias=False)
        icnr_(conv.weight, scale)
        return nn.Sequential(
            conv, nn.PixelShuffle(scale), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
        )
    conv = nn.ConvTranspose2d(  # transposed
        in_channels,
        out_channels,
        kernel_size=2 * scale,
        stride=scale,
        padding=scale // 2,
        bias=False,
    )
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """Maps a latent map at the encoder's resolution back to an RGB image in [0, 1].

    Args:
        latent_channels: channels of the latent map it decodes.
        stage_channels: the encoder's output channels per stage, lowest stage first.
        stage_reductions: the encoder's total downsampling after each stage.
        upsample: ``resize_conv`` (nearest resize then 3x3 conv, the default: no checkerboard
            artefacts), ``pixel_shuffle`` (sub-pixel conv with ICNR init) or ``transposed``.
        width: multiplier on the mirrored channel counts (decoder capacity).
        blocks_per_stage: extra 3x3 conv blocks after each upsampling step.
        min_channels: lower bound on any block's channels after ``width`` is applied.
    """

    def __init__(
        self,
        latent_channels: int,
        stage_channels: Sequence[int],
        stage_reductions: Sequence[int],
        upsample: Upsample = "resize_conv",
        width: float = 1.0,
        blocks_per_stage: int = 1,
        min_channels: int = 16,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.width = width
        self.blocks_per_stage = blocks_per_stage
        self.min_channels = min_channels
        check_choice("decoder.upsample", upsample, Upsample)
        if width <= 0 or blocks_per_stage < 0:
            raise ConfigError(
                f"decoder.width must be > 0 and decoder.blocks_per_stage >= 0 "
                f"(got {width}, {blocks_per_stage})."
            )
        # Output channels of block i: the channels of encoder stage i - 1; the last block,
        # which returns to full resolution, gets half the channels of the lowest stage.
        targets = [stage_channels[0] // 2, *stage_channels[:-1]]
        channels = [max(min_channels, round(c * width)) for c in targets]
        reductions = [1, *stage_reductions[:-1]]
        top = max(min_channels, round(stage_channels[-1] * width))
        self.input = conv_bn_relu(latent_channels, top)
        blocks = []
        in_channels = top
        for index in reversed(range(len(stage_channels))):
            scale = stage_reductions[index] // reductions[index]
            layers = [upsample_block(in_channels, channels[index], scale, upsample)]
            layers += [
                conv_bn_relu(channels[index], channels[index]) for _ in range(blocks_per_stage)
            ]
            blocks.append(nn.Sequential(*layers))
            in_channels = channels[index]
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Sequential(nn.Conv2d(in_channels, 3, 3, padding=1), nn.Sigmoid())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.output(self.blocks(self.input(latent)))
