"""Generated images (flat shapes over a gradient): no files, no downloads."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Dataset

from autoencoder.data.base import ImageDataModule
from autoencoder.data.datasets import check_positive_int
from autoencoder.errors import ConfigError

# The kinds of shape drawn, in the order of _signed_distances.
SHAPES = ("disc", "square", "triangle", "ring")


class _TensorDataset(Dataset):
    """Float images (N, 3, H, W) in [0, 1] with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def pixels(self) -> torch.Tensor:
        return self.images


class SyntheticDataModule(ImageDataModule):
    """Deterministic generated images: 1-4 coloured shapes (discs, squares, triangles,
    rings) over a colour gradient.

    Structured pictures whose reconstructions are easy to judge by eye, for the quick start,
    tests and offline smoke runs. The label is the number of shapes minus one
    (``num_classes == 4``). Each split has its own
    generator seeded from ``seed``, so changing ``num_train`` does not change val or test.
    The images live in memory as tensors, so loading needs no workers (``num_workers=0``),
    and small sets get several steps per epoch (``batch_size=32``).
    """

    max_shapes = 4
    in_memory = True

    def __init__(
        self,
        num_train: int = 256,
        num_val: int = 64,
        num_test: int = 64,
        image_size: int = 32,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        **base: Any,
    ) -> None:
        if image_size is None:
            raise ConfigError(
                "data.image_size must be set for synthetic data. Use e.g. data.image_size=32."
            )
        super().__init__(
            image_size=image_size, batch_size=batch_size, num_workers=num_workers, **base
        )
        self.num_train = check_positive_int("num_train", num_train, 256)
        self.num_val = check_positive_int("num_val", num_val, 64)
        self.num_test = check_positive_int("num_test", num_test, 64)
        self.seed = int(seed)

    def _generate(self, count: int, split_index: int) -> _TensorDataset:
        generator = torch.Generator().manual_seed(self.seed * 3 + split_index)
        images, labels = generate_shapes(count, self._size(), self.max_shapes, generator)
        return _TensorDataset(images, labels)

    def _size(self) -> int:
        assert self.image_size is not None  # enforced in __init__
        return self.image_size

    def _build_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        return (
            self._generate(self.num_train, 0),
            self._generate(self.num_val, 1),
            self._generate(self.num_test, 2),
        )

    def _native_hw(self) -> tuple[int, int]:
        return (self._size(), self._size())

    def _label_count(self) -> int | None:
        return self.max_shapes


def generate_shapes(
    count: int, size: int, max_shapes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``count`` RGB images ``(count, 3, size, size)`` in [0, 1] and their labels.

    Each image is a linear gradient between two random colours with 1..``max_shapes`` flat
    coloured shapes on top, each a disc, a square, a triangle or a ring of random position,
    size, rotation and colour, later ones covering earlier ones. Edges are anti-aliased over
    one pixel. The label is the number of shapes minus one.
    """

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    counts = torch.randint(1, max_shapes + 1, (count,), generator=generator)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    ys, xs = coords[:, None], coords[None, :]

    angle = (rand(count) * 2 * math.pi)[:, None, None]
    ramp = torch.cos(angle) * (xs - 0.5) + torch.sin(angle) * (ys - 0.5)
    ramp = (ramp + 0.5).clamp(0, 1)[:, None]
    start, end = rand(count, 3, 1, 1), rand(count, 3, 1, 1)
    images = start + (end - start) * ramp

    kinds = torch.randint(0, len(SHAPES), (count, max_shapes), generator=generator)
    centers = 0.2 + 0.6 * rand(count, max_shapes, 2)
    radii = 0.1 + 0.15 * rand(count, max_shapes)
    turns = rand(count, max_shapes) * 2 * math.pi
    colors = rand(count, max_shapes, 3)
    active = torch.arange(max_shapes)[None, :] < counts[:, None]
    for index in range(max_shapes):
        dy = ys - centers[:, index, 0, None, None]
        dx = xs - centers[:, index, 1, None, None]
        radius = radii[:, index, None, None]
        turn = turns[:, index, None, None]
        # signed distance to each shape's edge in image widths, positive inside
        inside = _signed_distances(dx, dy, radius, turn)
        inside = inside.gather(1, kinds[:, index, None, None, None].expand(-1, 1, size, size))
        alpha = (inside * size + 0.5).clamp(0, 1) * active[:, index, None, None, None]
        images = images * (1 - alpha) + colors[:, index, :, None, None] * alpha
    return images.clamp(0, 1).contiguous(), counts - 1


def _signed_distances(
    dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor, turn: torch.Tensor
) -> torch.Tensor:
    """``(count, len(SHAPES), H, W)``: how far each pixel lies inside each shape centred at
    offset ``(dx, dy)`` (negative outside); polygons are rotated by ``turn``."""
    u = torch.cos(turn) * dx + torch.sin(turn) * dy
    v = torch.cos(turn) * dy - torch.sin(turn) * dx
    distance = torch.sqrt(dx**2 + dy**2)
    disc = radius - distance
    square = 0.8 * radius - torch.maximum(u.abs(), v.abs())
    # an equilateral triangle: inside all three edges, each half a radius from the centre
    edges = [math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    triangle = torch.stack(
        [0.5 * radius - (u * math.cos(a) + v * math.sin(a)) for a in edges]
    ).amin(0)
    ring = 0.3 * radius - (distance - 0.7 * radius).abs()
    return torch.stack([disc, square, triangle, ring], 1)
