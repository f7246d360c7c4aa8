"""Reconstruction grids: small images enlarged pixel for pixel, rows labelled, captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoencoder.grids import comparison_grid


def tile(grid: np.ndarray, layout, index: int, reconstruction: bool) -> np.ndarray:
    """Image ``index`` read back from the grid at its own size (every ``scale``-th pixel)."""
    left, top = layout.box(index, reconstruction)
    block = grid[top : top + layout.tile_height, left : left + layout.tile_width]
    return block[:: layout.scale, :: layout.scale]


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(("size", "scale"), [(32, 3), (16, 6), (96, 1), (128, 1)])
def test_small_images_are_enlarged_by_whole_pixels(size: int, scale: int) -> None:
    torch.manual_seed(0)
    originals = torch.rand(5, 3, size, size)
    reconstructions = torch.rand(5, 3, size, size)
    image, layout = comparison_grid(originals, reconstructions, per_row=3)
    grid = np.asarray(image)
    assert layout.scale == scale and layout.tile_height == size * scale
    assert grid.shape[1::-1] == layout.size
    expected = as_uint8(originals), as_uint8(reconstructions)
    for index in range(5):
        np.testing.assert_array_equal(tile(grid, layout, index, False), expected[0][index])
        np.testing.assert_array_equal(tile(grid, layout, index, True), expected[1][index])
        left, top = layout.box(index, False)  # a block of scale x scale equal pixels
        block = grid[top : top + scale, left : left + scale].reshape(-1, 3)
        assert (block == block[0]).all()


def test_rows_are_labelled_and_captions_written_under_reconstructions() -> None:
    originals = torch.full((2, 3, 32, 32), 0.5)
    plain, layout = comparison_grid(originals, originals, per_row=2)
    captioned, captioned_layout = comparison_grid(
        originals, originals, per_row=2, captions=["#7 21.3 dB", "#2 19.0 dB"]
    )
    label_column = np.asarray(plain)[:, : layout.label_width]
    assert (label_column < 128).any()  # dark text on white: the row labels
    assert captioned_layout.caption_height > 0 and layout.caption_height == 0
    left, top = captioned_layout.box(0, reconstruction=True)
    band = np.asarray(captioned)[top + captioned_layout.tile_height + 2 :][:14, left:]
    assert (band < 128).any()  # the caption under the first reconstruction
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        comparison_grid(originals, originals, captions=["one"])
