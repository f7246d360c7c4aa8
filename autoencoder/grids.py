"""Image grids people can read: originals above their reconstructions, rows labelled, small
images enlarged, tiles optionally captioned (e.g. with their PSNR).

Used for the reconstruction grids logged during training (``ReconstructionImages``) and for
``scripts/evaluate.py``'s ``reconstructions.png`` and ``worst.png``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROW_LABELS = ("original", "reconstruction")
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_FONT_SIZE = 12


@dataclass(frozen=True)
class GridLayout:
    """Where each tile of a :func:`comparison_grid` lies.

    Images come in pairs of rows: ``per_row`` originals, then their reconstructions (with a
    caption band under them when there are captions). Each tile is the image enlarged
    ``scale`` times (nearest neighbour) to ``tile_height`` x ``tile_width`` pixels.
    """

    count: int
    per_row: int
    tile_height: int
    tile_width: int
    scale: int
    label_width: int
    caption_height: int
    padding: int = 2
    pair_gap: int = 6

    @property
    def pair_height(self) -> int:
        return 2 * (self.tile_height + self.padding) + self.caption_height + self.pair_gap

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole grid."""
        columns = min(self.count, self.per_row)
        rows = math.ceil(self.count / self.per_row)
        width = self.label_width + columns * (self.tile_width + self.padding) + self.padding
        return width, rows * self.pair_height + self.padding

    def box(self, index: int, reconstruction: bool) -> tuple[int, int]:
        """(left, top) pixel of image ``index``'s original or reconstruction tile."""
        pair, column = divmod(index, self.per_row)
        left = self.label_width + self.padding + column * (self.tile_width + self.padding)
        top = self.padding + pair * self.pair_height
        if reconstruction:
            top += self.tile_height + self.padding
        return left, top


def enlargement(height: int, width: int, min_size: int) -> int:
    """The integer factor that brings the smaller side to at least ``min_size`` pixels."""
    return max(1, math.ceil(min_size / min(height, width)))


def comparison_grid(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    per_row: int = 8,
    captions: Sequence[str] | None = None,
    min_size: int = 96,
) -> tuple[Image.Image, GridLayout]:
    """A labelled grid of images ``(N, 3, H, W)`` in [0, 1] above their reconstructions.

    Images smaller than ``min_size`` are enlarged by an integer factor, nearest neighbour, so
    every pixel stays a visible block; ``captions`` (one per image) are written under the
    reconstructions.
    """
    count, _, height, width = originals.shape
    if reconstructions.shape != originals.shape:
        raise ValueError(f"shapes differ: {tuple(originals.shape)}, {tuple(reconstructions.shape)}")
    if captions is not None and len(captions) != count:
        raise ValueError(f"{len(captions)} captions for {count} images")
    font = _font()
    scale = enlargement(height, width, min_size)
    layout = GridLayout(
        count=count,
        per_row=per_row,
        tile_height=height * scale,
        tile_width=width * scale,
        scale=scale,
        label_width=max(_text_width(font, label) for label in ROW_LABELS) + 8,
        caption_height=_FONT_SIZE + 6 if captions else 0,
    )
    canvas = Image.new("RGB", layout.size, _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for reconstruction, images in enumerate((originals, reconstructions)):
        for index, tile in enumerate(_tiles(images, scale)):
            canvas.paste(tile, layout.box(index, bool(reconstruction)))
    for pair in range(math.ceil(count / per_row)):
        for reconstruction, label in enumerate(ROW_LABELS):
            _, top = layout.box(pair * per_row, bool(reconstruction))
            draw.text((4, top + layout.tile_height // 2), label, fill=_TEXT, font=font, anchor="lm")
    for index, caption in enumerate(captions or ()):
        left, top = layout.box(index, reconstruction=True)
        draw.text((left, top + layout.tile_height + 2), caption, fill=_TEXT, font=font)
    return canvas, layout


def _tiles(images: torch.Tensor, scale: int) -> list[Image.Image]:
    pixels = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    arrays = pixels.permute(0, 2, 3, 1).numpy()
    if scale > 1:
        arrays = arrays.repeat(scale, axis=1).repeat(scale, axis=2)
    return [Image.fromarray(np.ascontiguousarray(array)) for array in arrays]


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=_FONT_SIZE)


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return math.ceil(right - left)
