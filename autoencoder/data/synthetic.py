"""Generated images (soft blobs over a gradient): no files, no downloads."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Dataset

from autoencoder.data.base import ImageDataModule, check_positive_int
from autoencoder.errors import ConfigError


class _TensorDataset(Dataset):
    """Float images (N, 3, H, W) in [0, 1] with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class SyntheticDataModule(ImageDataModule):
    """Deterministic generated images: 1-4 soft coloured blobs over a colour gradient.

    Smooth, structured images an autoencoder can learn, for tests and offline smoke runs.
    The label is the number of blobs minus one (``num_classes == 4``). Each split has its own
    generator seeded from ``seed``, so changing ``num_train`` does not change val or test.
    The images live in memory as tensors, so loading needs no workers (``num_workers=0``),
    and small sets get several steps per epoch (``batch_size=32``).
    """

    max_blobs = 4

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
        images, labels = generate_blobs(count, self._size(), self.max_blobs, generator)
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
        return self.max_blobs


def generate_blobs(
    count: int, size: int, max_blobs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``count`` RGB images ``(count, 3, size, size)`` in [0, 1] and their labels.

    Each image is a linear gradient between two random colours with 1..``max_blobs`` gaussian
    blobs of random colour, position and width alpha-composited on top; the label is the
    number of blobs minus one.
    """

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    counts = torch.randint(1, max_blobs + 1, (count,), generator=generator)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    ys, xs = coords[:, None], coords[None, :]

    angle = (rand(count) * 2 * math.pi)[:, None, None]
    ramp = torch.cos(angle) * (xs - 0.5) + torch.sin(angle) * (ys - 0.5)
    ramp = (ramp + 0.5).clamp(0, 1)[:, None]
    start, end = rand(count, 3, 1, 1), rand(count, 3, 1, 1)
    images = start + (end - start) * ramp

    centers = 0.15 + 0.7 * rand(count, max_blobs, 2)
    sigmas = 0.06 + 0.12 * rand(count, max_blobs)
    colors = rand(count, max_blobs, 3)
    active = torch.arange(max_blobs)[None, :] < counts[:, None]
    for blob in range(max_blobs):
        dy = ys - centers[:, blob, 0, None, None]
        dx = xs - centers[:, blob, 1, None, None]
        sigma = sigmas[:, blob, None, None]
        alpha = torch.exp(-(dy**2 + dx**2) / (2 * sigma**2)) * active[:, blob, None, None]
        alpha = alpha[:, None]
        images = images * (1 - alpha) + colors[:, blob, :, None, None] * alpha
    return images.clamp(0, 1).contiguous(), counts - 1
