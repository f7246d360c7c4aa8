"""Images from local ``.npz`` arrays: ``path/train.npz`` and ``path/test.npz``."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from autoencoder.data.base import ImageDataModule
from autoencoder.errors import ConfigError

_ARRAYS_FORMAT = (
    "each .npz needs key 'images' (uint8, N x H x W x 3 RGB or N x H x W grayscale) "
    "and optionally key 'labels' (integers, length N)"
)


class _ArrayDataset(Dataset):
    """Items of an in-memory uint8 array (kept uint8; converted per item)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        image = self.images[index]
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        label = -1 if self.labels is None else int(self.labels[index])
        return image, label

    def pixels(self) -> torch.Tensor:
        """Every image as one ``(N, 3, H, W)`` uint8 view of the array (no copy)."""
        images = torch.from_numpy(self.images)
        if images.ndim == 3:
            return images[:, None].expand(-1, 3, -1, -1)
        return images.permute(0, 3, 1, 2)


class ArraysDataModule(ImageDataModule):
    """Images from ``path/train.npz`` and ``path/test.npz``; val is carved from train.

    Each file holds key ``images`` (uint8, ``N x H x W x 3`` or ``N x H x W`` grayscale) and
    optionally ``labels`` (integers, length N; missing labels become -1). Arrays stay uint8 in
    memory and are converted to float one image at a time, or a batch at a time on the
    training device (``on_device``).
    """

    labels_hint = (
        "data=arrays needs a 'labels' array (integers, one per image) in both train.npz and "
        "test.npz"
    )

    def __init__(self, path: str | Path, **base: Any) -> None:
        super().__init__(**base)
        self.path = Path(path).expanduser()
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray | None]] | None = None

    def _load(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        if self._arrays is None:
            if not self.path.is_dir():
                raise ConfigError(
                    f"data.path={self.path} is not an existing folder. data=arrays needs "
                    f"data.path=<DIR> containing train.npz and test.npz; {_ARRAYS_FORMAT}."
                )
            arrays = {split: _load_npz(self.path / f"{split}.npz") for split in ("train", "test")}
            train_hw = arrays["train"][0].shape[1:3]
            test_hw = arrays["test"][0].shape[1:3]
            if train_hw != test_hw and self.image_size is None:
                raise ConfigError(
                    f"train.npz images are {train_hw[0]}x{train_hw[1]} but test.npz images are "
                    f"{test_hw[0]}x{test_hw[1]} (H x W) in {self.path}. Set data.image_size=N to "
                    "resize both to N x N."
                )
            self._arrays = arrays
        return self._arrays

    def _build_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        arrays = self._load()
        train, val = self._carve_val(_ArrayDataset(*arrays["train"]))
        return train, val, _ArrayDataset(*arrays["test"])

    def _native_hw(self) -> tuple[int, int]:
        height, width = self._load()["train"][0].shape[1:3]
        return (height, width)

    def _label_count(self) -> int | None:
        """``max(label) + 1`` over both files (or the number of class names ``train.npz``
        gives), ``None`` when neither file has labels."""
        labels = [lab for _, lab in self._load().values() if lab is not None]
        top = max((int(lab.max()) for lab in labels), default=-1)
        if top < 0:
            return None
        return max(top + 1, len(self._label_names() or ()))

    def _label_names(self) -> list[str] | None:
        """The optional ``classes`` array of ``train.npz`` (one name per label)."""
        with np.load(self.path / "train.npz", allow_pickle=False) as npz:
            return [str(name) for name in npz["classes"]] if "classes" in npz.files else None


def _load_npz(file: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and validate ``images`` (and optional ``labels``) from one .npz file."""
    if not file.is_file():
        raise ConfigError(
            f"{file} not found. data=arrays needs data.path=<DIR> containing train.npz and "
            f"test.npz; {_ARRAYS_FORMAT}."
        )
    try:
        npz = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{file} is not a readable .npz file ({exc}). Save it with "
            f"np.savez(file, images=..., labels=...); {_ARRAYS_FORMAT}."
        ) from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ConfigError(
            f"{file} holds a single array, not an .npz archive. Save it with "
            f"np.savez(file, images=..., labels=...); {_ARRAYS_FORMAT}."
        )
    with npz:
        if "images" not in npz.files:
            raise ConfigError(
                f"{file} has no key 'images' (keys: {', '.join(npz.files) or 'none'}); "
                f"{_ARRAYS_FORMAT}."
            )
        try:
            images = npz["images"]
            labels = npz["labels"] if "labels" in npz.files else None
        except ValueError as exc:  # object arrays need pickle, which is disabled
            raise ConfigError(f"{file} could not be read ({exc}); {_ARRAYS_FORMAT}.") from exc
    if images.dtype != np.uint8:
        convert = (
            "16-bit values with (images / 257).round().astype(np.uint8)"
            if images.dtype == np.uint16
            else "floats in [0, 1] with (images * 255).round().astype(np.uint8)"
        )
        raise ConfigError(
            f"{file}: 'images' has dtype {images.dtype}, expected uint8 (0..255). Convert "
            f"{convert}; {_ARRAYS_FORMAT}."
        )
    grayscale = images.ndim == 3
    rgb = images.ndim == 4 and images.shape[3] == 3
    if not (grayscale or rgb) or images.shape[0] == 0:
        raise ConfigError(
            f"{file}: 'images' has shape {images.shape}, expected N x H x W x 3 or N x H x W "
            f"with N > 0 (channels last); {_ARRAYS_FORMAT}."
        )
    if labels is not None and (
        labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise ConfigError(
            f"{file}: 'labels' has shape {labels.shape} and dtype {labels.dtype}, expected "
            f"{len(images)} integers (one per image); {_ARRAYS_FORMAT}."
        )
    return images, None if labels is None else labels.astype(np.int64)
