"""Torchvision's labelled sets (CIFAR-10, CIFAR-100, STL-10), downloaded into ``root``."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import Dataset

from autoencoder.data.base import ImageDataModule
from autoencoder.errors import ResourceUnavailableError, error_summary


class _TorchvisionDataModule(ImageDataModule):
    """A torchvision dataset with a train and a test split; val is carved from train."""

    _display_name: str
    _subdir: str
    _size: int
    _classes: int

    def __init__(self, root: str | Path = "data", download: bool = True, **base: Any) -> None:
        super().__init__(**base)
        self.root = Path(root).expanduser()
        self.download = bool(download)

    def _construct(self, train: bool) -> Dataset:
        raise NotImplementedError

    def _open(self, train: bool) -> Dataset:
        try:
            return self._construct(train)
        except (OSError, RuntimeError, tarfile.TarError, zipfile.BadZipFile) as exc:
            if self.download:
                problem = f"could not be downloaded ({error_summary(exc)})"
                first_fix = "connect to the internet once"
            else:
                problem = "was not downloaded (data.download=false)"
                first_fix = "set data.download=true with internet access"
            raise ResourceUnavailableError(
                f"{self._display_name} is not in {self.root} and {problem}. Either {first_fix}, "
                f"put the extracted dataset under data.root=<DIR> (as <DIR>/{self._subdir}), "
                "or train from local arrays: data=arrays data.path=<DIR with train.npz and "
                "test.npz>."
            ) from exc

    def prepare_data(self) -> None:
        """Download both splits if needed (Lightning calls this once, on rank 0)."""
        self._open(train=True)
        self._open(train=False)

    def _build_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        train, val = self._carve_val(self._open(train=True))
        return train, val, self._open(train=False)

    def _native_hw(self) -> tuple[int, int]:
        return (self._size, self._size)

    def _label_count(self) -> int | None:
        return self._classes

    def _pixels(self, dataset: Dataset) -> torch.Tensor | None:
        """The uint8 array torchvision keeps every image of these sets in, as a tensor view:
        the pixels its PIL images are made from."""
        if isinstance(dataset, torchvision.datasets.CIFAR10):  # CIFAR-100 too: N x H x W x 3
            return torch.from_numpy(dataset.data).permute(0, 3, 1, 2)
        if isinstance(dataset, torchvision.datasets.STL10):  # N x 3 x H x W
            return torch.from_numpy(dataset.data)
        return super()._pixels(dataset)

    def _label_names(self) -> list[str] | None:
        return list(getattr(self._open(train=False), "classes", None) or []) or None


class CIFAR10DataModule(_TorchvisionDataModule):
    """CIFAR-10 (32x32, 10 classes) from torchvision; downloads into ``root`` if missing."""

    _display_name = "CIFAR-10"
    _subdir = "cifar-10-batches-py"
    _size = 32
    _classes = 10

    def _construct(self, train: bool) -> Dataset:
        return torchvision.datasets.CIFAR10(str(self.root), train=train, download=self.download)


class CIFAR100DataModule(_TorchvisionDataModule):
    """CIFAR-100 (32x32, 100 fine classes) from torchvision; downloads into ``root``."""

    _display_name = "CIFAR-100"
    _subdir = "cifar-100-python"
    _size = 32
    _classes = 100

    def _construct(self, train: bool) -> Dataset:
        return torchvision.datasets.CIFAR100(str(self.root), train=train, download=self.download)


class STL10DataModule(_TorchvisionDataModule):
    """STL-10 labelled splits (96x96, 10 classes): 'train' gives train/val, 'test' gives test."""

    _display_name = "STL-10"
    _subdir = "stl10_binary"
    _size = 96
    _classes = 10

    def _construct(self, train: bool) -> Dataset:
        split = "train" if train else "test"
        return torchvision.datasets.STL10(str(self.root), split=split, download=self.download)
