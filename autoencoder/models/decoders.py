"""Learned upsampling decoders built from an encoder's stage channels.

The decoder mirrors the encoder: one block per encoder stage, from the top down, each
undoing that stage's downsampling and producing the channels of the stage below it. There
are no skip connections: everything the decoder sees passes through the bottleneck.

Its form is configuration (``conf/decoder/``): how it upsamples (``upsample``, in one step or
in steps of 2x with ``progressive``), the blocks after each upsampling (``block``: plain
conv or residual, ``blocks_per_stage``), the normalisation (``norm``) and the capacity
(``width``, ``min_channels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from autoencoder.errors import ConfigError, check_choice

Upsample = Literal["resize_conv", "pixel_shuffle", "transposed"]
UPSAMPLE_MODES: tuple[str, ...] = get_args(Upsample)
Block = Literal["plain", "residual"]
Norm = Literal["batch", "group", "none"]


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


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """BatchNorm, GroupNorm (up to 8 groups that divide ``channels``) or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def conv_norm_act(in_channels: int, out_channels: int, norm: Norm = "batch") -> nn.Sequential:
    """3x3 conv, normalisation, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm == "none"),
        norm_layer(norm, out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity shortcut (ResNet's basic block), then ReLU.

    The second normalisation's scale starts at zero (where it has one), so the block starts
    as the identity: a deeper decoder trains as easily as a shallow one.
    """

    def __init__(self, channels: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, channels),
        )
        last_norm = self.body[-1]
        if getattr(last_norm, "weight", None) is not None:
            nn.init.zeros_(last_norm.weight)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.body(x))


def feature_block(channels: int, block: Block, norm: Norm) -> nn.Module:
    """One block that keeps resolution and channels."""
    if block == "residual":
        return ResidualBlock(channels, norm)
    return conv_norm_act(channels, channels, norm)


def upsample_block(
    in_channels: int, out_channels: int, scale: int, mode: Upsample, norm: Norm = "batch"
) -> nn.Sequential:
    """Upsample by ``scale`` (1 = none) and map ``in_channels`` to ``out_channels``."""
    if scale == 1:
        return conv_norm_act(in_channels, out_channels, norm)
    if mode == "resize_conv":
        return nn.Sequential(
            nn.Upsample(scale_factor=scale, mode="nearest"),
            *conv_norm_act(in_channels, out_channels, norm),
        )
    if mode == "pixel_shuffle":
        conv = nn.Conv2d(in_channels, out_channels * scale**2, 3, padding=1, bias=norm == "none")
        icnr_(conv.weight, scale)
        return nn.Sequential(
            conv, nn.PixelShuffle(scale), norm_layer(norm, out_channels), nn.ReLU(inplace=True)
        )
    conv = nn.ConvTranspose2d(  # transposed
        in_channels,
        out_channels,
        kernel_size=2 * scale,
        stride=scale,
        padding=scale // 2,
        bias=norm == "none",
    )
    return nn.Sequential(conv, norm_layer(norm, out_channels), nn.ReLU(inplace=True))


def upsample_steps(scale: int, progressive: bool) -> list[int]:
    """The scale of each upsampling step: ``[scale]``, or steps of 2 when ``progressive``
    (and ``scale`` is a power of 2)."""
    if not progressive or scale <= 2 or scale & (scale - 1):
        return [scale]
    return [2] * (scale.bit_length() - 1)


class Decoder(nn.Module):
    """Maps a latent map at the encoder's resolution back to an RGB image in [0, 1].

    Args:
        latent_channels: channels of the latent map it decodes.
        stage_channels: the encoder's output channels per stage, lowest stage first.
        stage_reductions: the encoder's total downsampling after each stage.
        upsample: ``resize_conv`` (nearest resize then 3x3 conv: no checkerboard
            artefacts), ``pixel_shuffle`` (sub-pixel conv with ICNR init) or ``transposed``.
        width: multiplier on the mirrored channel counts (decoder capacity).
        blocks_per_stage: blocks after each upsampling step that keep the resolution.
        min_channels: lower bound on any block's channels after ``width`` is applied.
        block: those blocks are ``plain`` (conv, norm, ReLU) or ``residual`` (ResNet basic
            blocks starting as the identity).
        norm: normalisation after each conv: ``batch``, ``group`` or ``none``.
        progressive: undo a stage's downsampling in steps of 2x, each with its own conv and
            blocks, instead of one resize (the ResNet stem downsamples 4x at once).
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
        block: Block = "plain",
        norm: Norm = "batch",
        progressive: bool = False,
    ) -> None:
        super().__init__()
        check_choice("decoder.upsample", upsample, Upsample)
        check_choice("decoder.block", block, Block)
        check_choice("decoder.norm", norm, Norm)
        if width <= 0 or blocks_per_stage < 0:
            raise ConfigError(
                f"decoder.width must be > 0 and decoder.blocks_per_stage >= 0 "
                f"(got {width}, {blocks_per_stage})."
            )
        self.upsample = upsample
        self.width = width
        self.blocks_per_stage = blocks_per_stage
        self.min_channels = min_channels
        self.block = block
        self.norm = norm
        self.progressive = progressive
        # Output channels of block i: the channels of encoder stage i - 1; the last block,
        # which returns to full resolution, gets half the channels of the lowest stage.
        targets = [stage_channels[0] // 2, *stage_channels[:-1]]
        channels = [max(min_channels, round(c * width)) for c in targets]
        reductions = [1, *stage_reductions[:-1]]
        top = max(min_channels, round(stage_channels[-1] * width))
        self.input = conv_norm_act(latent_channels, top, norm)
        blocks = []
        in_channels = top
        for index in reversed(range(len(stage_channels))):
            steps = upsample_steps(stage_reductions[index] // reductions[index], progressive)
            layers: list[nn.Module] = []
            for step, scale in enumerate(steps):
                out = channels[index] if step == len(steps) - 1 else in_channels
                layers.append(upsample_block(in_channels, out, scale, upsample, norm))
                layers += [feature_block(out, block, norm) for _ in range(blocks_per_stage)]
                in_channels = out
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Sequential(nn.Conv2d(in_channels, 3, 3, padding=1), nn.Sigmoid())

    def settings(self) -> dict[str, object]:
        """The options that decide the decoder's weights, by argument name."""
        return {
            name: getattr(self, name)
            for name in (
                "upsample",
                "width",
                "blocks_per_stage",
                "min_channels",
                "block",
                "norm",
                "progressive",
            )
        }

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.output(self.blocks(self.input(latent)))
