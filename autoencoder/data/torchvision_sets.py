"""Torchvision's labelled sets (CIFAR-10, CIFAR-100, STL-10), downloaded into ``root``."""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.utils.data import Dataset

from autoencoder.data.base import ImageDataModule
from autoencoder.errors import ResourceUnavailableError, error_summary


@dataclass(frozen=True)
class TorchvisionSet:
    """One of torchvision's labelled sets: what a datamodule of it needs to know.

    Attributes:
        display_name: its name in messages.
        subdir: the folder torchvision extracts it into under ``data.root``.
        size: its images' side in pixels.
        classes: its number of labels.
        dataset: torchvision's class; ``split_argument``: whether it takes
            ``split="train"|"test"`` (STL-10) rather than ``train=True|False``.
    """

    display_name: str
    subdir: str
    size: int
    classes: int
    dataset: type[torchvision.datasets.VisionDataset]
    split_argument: bool = False


class _TorchvisionDataModule(ImageDataModule):
    """A torchvision dataset (:attr:`source`) with a train and a test split; val is carved
    from train."""

    source: TorchvisionSet

    def __init__(self, root: str | Path = "data", download: bool = True, **base: Any) -> None:
        super().__init__(**base)
        self.root = Path(root).expanduser()
        self.download = bool(download)

    def _construct(self, train: bool) -> Dataset:
        split = (
            {"split": "train" if train else "test"}
            if self.source.split_argument
            else {"train": train}
        )
        return self.source.dataset(str(self.root), download=self.download, **split)

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
            name, subdir = self.source.display_name, self.source.subdir
            raise ResourceUnavailableError(
                f"{name} is not in {self.root} and {problem}. Either {first_fix}, "
                f"put the extracted dataset under data.root=<DIR> (as <DIR>/{subdir}), "
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
        return (self.source.size, self.source.size)

    def _label_count(self) -> int | None:
        return self.source.classes

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

    source = TorchvisionSet("CIFAR-10", "cifar-10-batches-py", 32, 10, torchvision.datasets.CIFAR10)


class CIFAR100DataModule(_TorchvisionDataModule):
    """CIFAR-100 (32x32, 100 fine classes) from torchvision; downloads into ``root``."""

    source = TorchvisionSet("CIFAR-100", "cifar-100-python", 32, 100, torchvision.datasets.CIFAR100)


class STL10DataModule(_TorchvisionDataModule):
    """STL-10 labelled splits (96x96, 10 classes): 'train' gives train/val, 'test' gives test."""

    source = TorchvisionSet(
        "STL-10", "stl10_binary", 96, 10, torchvision.datasets.STL10, split_argument=True
    )
