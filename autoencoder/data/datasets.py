"""The pieces a datamodule's splits are made of: the dataset wrappers (relabelled classes,
per-image transforms), what reads through them (labels, the source of an item), the seeded
split and the checks of data options; and the conversion of any PIL image to RGB."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, random_split

from autoencoder.errors import ConfigError


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image (grayscale, RGBA, palette, 16-bit, ...) to 8-bit RGB.

    PIL's own ``convert("RGB")`` clips 16/32-bit integer images to 0..255 instead of scaling
    them, which turns most 16-bit images white, so integer modes are rescaled from the 16-bit
    range first.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        eight_bit = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit).convert("RGB")
    if image.mode == "P":
        # Going through RGBA avoids PIL's warning about palette transparency.
        image = image.convert("RGBA")
    return image.convert("RGB")


class Relabelled(Dataset):
    """The items of ``base`` at ``indices``, each label mapped through ``mapping``."""

    def __init__(self, base: Dataset, indices: Sequence[int], mapping: dict[int, int]) -> None:
        self.base = Subset(base, list(indices))
        self.mapping = mapping

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        return image, self.mapping[int(label)]


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Every label of ``dataset`` (``-1`` where unlabelled), read without decoding images where
    the dataset keeps them in an attribute (arrays, torchvision sets), else item by item."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    for attribute in ("labels", "targets"):
        if hasattr(dataset, attribute):
            values = getattr(dataset, attribute)
            if values is None:  # an arrays file without labels
                return np.full(len(dataset), -1, dtype=np.int64)  # type: ignore[arg-type]
            return np.asarray(values, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)  # type: ignore[arg-type]


class TransformedDataset(Dataset):
    """Applies a transform to the image of each ``(image, label)`` pair of another dataset."""

    def __init__(self, base: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        if isinstance(image, Image.Image):
            image = to_rgb(image)
        return self.transform(image), int(label)


def check_fraction(name: str, value: float, example: float) -> float:
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"data.{name} must be between 0 and 1 (exclusive), got {value}. "
            f"Use e.g. data.{name}={example}."
        )
    return float(value)


def check_positive_int(name: str, value: Any, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"data.{name} must be a positive integer, got {value!r}. "
            f"Use e.g. data.{name}={example}."
        )
    return value


def seeded_split(dataset: Dataset, lengths: Sequence[int], seed: int) -> list[Dataset]:
    """Deterministic random split: the same seed and lengths always give the same subsets."""
    generator = torch.Generator().manual_seed(seed)
    return list(random_split(dataset, list(lengths), generator=generator))


def source_of(dataset: Dataset, index: int) -> int | str:
    """Where item ``index`` of a datamodule split comes from.

    The file path for datasets of files (those with a ``source(index)`` method, as image
    folders); otherwise the index in the underlying dataset (the row of
    ``train.npz``/``test.npz``, the index in a torchvision set), through the val and
    train-subset ``Subset`` wrappers.
    """
    while True:
        if isinstance(dataset, (TransformedDataset, Relabelled)):
            dataset = dataset.base
        elif isinstance(dataset, Subset):
            index, dataset = int(dataset.indices[index]), dataset.dataset
        elif hasattr(dataset, "source"):
            return dataset.source(index)
        else:
            return index
