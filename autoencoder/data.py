"""LightningDataModules yielding ``(images, labels)`` batches.

Every module produces float32 RGB images in ``[0, 1]`` of shape ``(B, 3, H, W)`` and int64
labels (``-1`` where a dataset has no labels). Random augmentation is applied to the training
split only; validation and test images are only converted (and resized when ``image_size`` is
set).

User mistakes raise :class:`~autoencoder.errors.ConfigError` and unavailable datasets raise
:class:`~autoencoder.errors.ResourceUnavailableError`; both messages name the Hydra override
that fixes the problem.
"""

from __future__ import annotations

import math
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, random_split
from torchvision.transforms import v2

from autoencoder.errors import ConfigError, ResourceUnavailableError

__all__ = [
    "ArraysDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FolderDataModule",
    "ImageDataModule",
    "STL10DataModule",
    "SyntheticDataModule",
    "to_rgb",
]

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_ARRAYS_FORMAT = (
    "each .npz needs key 'images' (uint8, N x H x W x 3 RGB or N x H x W grayscale) "
    "and optionally key 'labels' (integers, length N)"
)
_MAX_LISTED = 10


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


class _TransformedDataset(Dataset):
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


class _FileDataset(Dataset):
    """Images read from files with PIL, one ``(path, label)`` pair per item."""

    def __init__(self, items: Sequence[tuple[Path, int]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.items[index]
        try:
            with Image.open(path) as image:
                rgb = to_rgb(image)
                # Closing the file also frees ``image``, so an RGB file needs its own copy.
                return (rgb.copy() if rgb is image else rgb), label
        except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of reporting bad files
            raise ConfigError(
                f"{path} could not be read ({error}); it was readable when the folder was "
                "scanned, so it changed since. Restore or delete it and restart from the "
                "run's checkpoints/last.ckpt."
            ) from None


class _TensorDataset(Dataset):
    """Float images (N, 3, H, W) in [0, 1] with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def _check_fraction(name: str, value: float, example: float) -> float:
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"data.{name} must be between 0 and 1 (exclusive), got {value}. "
            f"Use e.g. data.{name}={example}."
        )
    return float(value)


def _check_positive_int(name: str, value: Any, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"data.{name} must be a positive integer, got {value!r}. "
            f"Use e.g. data.{name}={example}."
        )
    return value


def _split(dataset: Dataset, lengths: Sequence[int], seed: int) -> list[Dataset]:
    """Deterministic random split: the same seed and lengths always give the same subsets."""
    generator = torch.Generator().manual_seed(seed)
    return list(random_split(dataset, list(lengths), generator=generator))


class EpochSeededSampler(Sampler[int]):
    """Random order drawn from ``(seed, epoch)`` alone.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from a checkpoint
    sees the same batches as an uninterrupted one; the default sampler draws from the global
    random state, which a resume does not restore.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class ImageDataModule(pl.LightningDataModule):
    """Base class: transforms, train/val/test dataloaders and the val split.

    Subclasses implement :meth:`_build_splits` (raw datasets yielding ``(image, label)`` where
    the image is a PIL image, an HWC uint8 array or a CHW float tensor) and
    :meth:`_native_hw` (image height and width before resizing).

    Args:
        batch_size: Images per batch.
        num_workers: DataLoader worker processes (workers persist between epochs when > 0).
        image_size: Resize images to ``image_size x image_size``; ``None`` keeps the native size.
        random_crop: Train only: reflect-pad by size/8, then randomly crop back to the size.
        horizontal_flip: Train only: flip left-right with probability 0.5.
        val_fraction: Fraction of the training data held out for validation when the dataset
            has no validation split.
        split_seed: Seed of the train/val(/test) split; fixed so runs are comparable.
        pin_memory: Pin batches in page-locked memory (faster host-to-GPU copies).
        train_subset: Keep only this many training images (a fixed random subset drawn with
            ``split_seed``, after the validation split is carved) for low-data experiments;
            ``None`` keeps them all. Validation and test sets are unchanged.
    """

    def __init__(
        self,
        *,
        batch_size: int = 128,
        num_workers: int = 0,
        image_size: int | None = None,
        random_crop: bool = False,
        horizontal_flip: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        pin_memory: bool = False,
        train_subset: int | None = None,
    ) -> None:
        super().__init__()
        self.train_subset = (
            None
            if train_subset is None
            else _check_positive_int("train_subset", train_subset, 5000)
        )
        self.batch_size = _check_positive_int("batch_size", batch_size, 128)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(
                f"data.num_workers must be an integer >= 0, got {num_workers!r}. "
                "Use e.g. data.num_workers=2."
            )
        self.num_workers = num_workers
        self.image_size = (
            None if image_size is None else _check_positive_int("image_size", image_size, 64)
        )
        self.random_crop = bool(random_crop)
        self.horizontal_flip = bool(horizontal_flip)
        self.val_fraction = _check_fraction("val_fraction", val_fraction, 0.1)
        self.split_seed = int(split_seed)
        self.pin_memory = bool(pin_memory)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- subclass hooks -------------------------------------------------------------------

    def _build_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return the raw (untransformed) train, val and test datasets."""
        raise NotImplementedError

    def _native_hw(self) -> tuple[int, int] | None:
        """Return the (height, width) of the images before resizing.

        ``None`` means the images differ in size, which subclasses allow only when
        ``image_size`` is set.
        """
        raise NotImplementedError

    # -- public API -------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(3, H, W)`` of one image in a batch."""
        if self.image_size is not None:
            return (3, self.image_size, self.image_size)
        native = self._native_hw()
        assert native is not None, "images of different sizes are rejected without image_size"
        return (3, *native)

    @property
    def num_classes(self) -> int | None:
        """Number of label classes, or ``None`` when the data has no labels (labels are -1)."""
        return None

    def setup(self, stage: str | None = None) -> None:
        """Build all three splits once; later calls (any stage) are no-ops."""
        if self.train_set is not None:
            return
        train, val, test = self._build_splits()
        if self.train_subset is not None and self.train_subset < len(train):  # type: ignore[arg-type]
            generator = torch.Generator().manual_seed(self.split_seed)
            keep = torch.randperm(len(train), generator=generator)[: self.train_subset]  # type: ignore[arg-type]
            train = Subset(train, sorted(keep.tolist()))
        self.train_set = _TransformedDataset(train, self._transform(train=True))
        self.val_set = _TransformedDataset(val, self._transform(train=False))
        self.test_set = _TransformedDataset(test, self._transform(train=False))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    # -- helpers ----------------------------------------------------------------------------

    def _transform(self, *, train: bool) -> v2.Compose:
        steps: list[Callable[[Any], Any]] = [v2.ToImage()]
        native = self._native_hw()
        if self.image_size is not None and native != (self.image_size, self.image_size):
            steps.append(v2.Resize((self.image_size, self.image_size), antialias=True))
        _, height, width = self.image_shape
        if train and self.random_crop:
            padding = max(1, round(min(height, width) / 8))
            steps.append(v2.RandomCrop((height, width), padding=padding, padding_mode="reflect"))
        if train and self.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]
        return v2.Compose(steps)

    def _loader(self, split: str) -> DataLoader:
        self.setup()
        dataset = getattr(self, f"{split}_set")
        sampler = (
            EpochSeededSampler(len(dataset), torch.initial_seed()) if split == "train" else None
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _carve_val(self, train: Dataset) -> tuple[Dataset, Dataset]:
        """Hold out ``val_fraction`` of ``train`` (at least one item each) for validation."""
        total = len(train)  # type: ignore[arg-type]
        num_val = max(1, round(total * self.val_fraction))
        if total - num_val < 1:
            raise ConfigError(
                f"only {total} training images: too few to hold out a validation split. "
                "Provide more images."
            )
        train_part, val_part = _split(train, [total - num_val, num_val], self.split_seed)
        return train_part, val_part


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
                reason = str(exc.reason) if isinstance(exc, URLError) else str(exc)
                reason = reason if len(reason) <= 120 else reason[:117] + "..."
                problem = f"could not be downloaded ({reason})"
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

    @property
    def num_classes(self) -> int | None:
        return self._classes


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


class ArraysDataModule(ImageDataModule):
    """Images from ``path/train.npz`` and ``path/test.npz``; val is carved from train.

    Each file holds key ``images`` (uint8, ``N x H x W x 3`` or ``N x H x W`` grayscale) and
    optionally ``labels`` (integers, length N; missing labels become -1). Arrays stay uint8 in
    memory and are converted to float one image at a time.
    """

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

    @property
    def num_classes(self) -> int | None:
        """``max(label) + 1`` over both files, or ``None`` when neither has labels."""
        labels = [lab for _, lab in self._load().values() if lab is not None]
        top = max((int(lab.max()) for lab in labels), default=-1)
        return top + 1 if top >= 0 else None


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


@dataclass(frozen=True)
class _FolderIndex:
    """Result of scanning a folder: labelled files per split and their common image size."""

    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]] | None  # None: test is carved from ``train``
    hw: tuple[int, int] | None  # None when sizes differ (allowed only with image_size)
    classes: tuple[str, ...]


class FolderDataModule(ImageDataModule):
    """Any folder tree of image files, searched recursively.

    If ``path/train`` and ``path/test`` both exist they are the train and test splits (val is
    carved from train); otherwise val and test are carved from all images with ``split_seed``.
    Files are matched by extension; hidden files and folders (starting with '.') are ignored.
    Unreadable images are found in :meth:`setup` and skipped with a warning, or rejected when
    ``skip_corrupt=False``.

    Args:
        path: Root folder of the images.
        extensions: File extensions (case-insensitive) treated as images.
        test_fraction: Fraction of all images held out for testing when there is no
            ``path/test`` folder.
        labels_from_subfolders: Label each image with the index of its top-level subfolder
            (sorted by name) instead of -1.
        skip_corrupt: Skip unreadable image files (with a warning) instead of raising.
        **base: Arguments of :class:`ImageDataModule`.
    """

    def __init__(
        self,
        path: str | Path,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        test_fraction: float = 0.1,
        labels_from_subfolders: bool = False,
        skip_corrupt: bool = True,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.path = Path(path).expanduser()
        if isinstance(extensions, str) or not extensions:
            raise ConfigError(
                f"data.extensions must be a non-empty list, got {extensions!r}. "
                "Use e.g. data.extensions=[.png,.jpg]."
            )
        self.extensions = tuple(f".{ext.lower().lstrip('.')}" for ext in map(str, extensions))
        self.test_fraction = _check_fraction("test_fraction", test_fraction, 0.1)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction must be below 1, got "
                f"{self.val_fraction} + {self.test_fraction}. Use e.g. data.val_fraction=0.1 "
                "data.test_fraction=0.1."
            )
        self.labels_from_subfolders = bool(labels_from_subfolders)
        self.skip_corrupt = bool(skip_corrupt)
        self._index: _FolderIndex | None = None

    def _list_images(self, folder: Path) -> list[Path]:
        return sorted(
            file
            for file in folder.rglob("*")
            if file.suffix.lower() in self.extensions
            and not any(part.startswith(".") for part in file.relative_to(folder).parts)
            and file.is_file()
        )

    def _scan(self) -> _FolderIndex:
        """List, decode and size-check the images once.

        Every image is decoded in full (``Image.load``), not only checked with
        ``Image.verify``, which passes a truncated JPEG that would then fail mid-epoch.
        """
        if self._index is not None:
            return self._index
        if not self.path.is_dir():
            raise ConfigError(
                f"data.path={self.path} is not an existing folder. Point data.path at a folder "
                "of images."
            )
        split_mode = (self.path / "train").is_dir() and (self.path / "test").is_dir()
        roots = [self.path / "train", self.path / "test"] if split_mode else [self.path]
        listed = {root: self._list_images(root) for root in roots}

        sizes: dict[Path, tuple[int, int]] = {}
        corrupt: list[Path] = []
        for file in (file for files in listed.values() for file in files):
            try:
                with Image.open(file) as image:
                    sizes[file] = image.size
                    image.load()
            except Exception:  # PIL signals bad files with many exception types
                sizes.pop(file, None)
                corrupt.append(file)
        if corrupt:
            self._report_corrupt(corrupt)

        for root, files in listed.items():
            if not any(file in sizes for file in files):
                unreadable = f", and {len(files)} unreadable" if files else ""
                raise ConfigError(
                    f"no images found under {root} (looked for extensions "
                    f"{', '.join(self.extensions)}{unreadable}). Point data.path at a folder "
                    "of images."
                )
        distinct = {}
        for file, size in sizes.items():
            distinct.setdefault(size, file)
        if len(distinct) > 1 and self.image_size is None:
            examples = ", ".join(
                f"{file.relative_to(self.path)} is {w}x{h}"
                for (w, h), file in list(distinct.items())[:3]
            )
            raise ConfigError(
                f"images under {self.path} have different sizes ({examples}; W x H). "
                "Set data.image_size=N to resize all of them to N x N."
            )

        labelled = {root: [f for f in files if f in sizes] for root, files in listed.items()}
        classes = self._classes(labelled) if self.labels_from_subfolders else ()
        index_of = {name: i for i, name in enumerate(classes)}

        def with_labels(root: Path) -> list[tuple[Path, int]]:
            if not self.labels_from_subfolders:
                return [(file, -1) for file in labelled[root]]
            return [(file, index_of[file.relative_to(root).parts[0]]) for file in labelled[root]]

        (width, height), _ = next(iter(distinct.items()))
        self._index = _FolderIndex(
            train=with_labels(roots[0]),
            test=with_labels(roots[1]) if split_mode else None,
            hw=(height, width) if len(distinct) == 1 else None,
            classes=classes,
        )
        rank_zero_info(
            f"FolderDataModule: {len(sizes)} images under {self.path}"
            + (f" ({len(corrupt)} unreadable skipped)" if corrupt else "")
            + (" using its train/ and test/ folders" if split_mode else "")
        )
        return self._index

    def _report_corrupt(self, corrupt: list[Path]) -> None:
        names = ", ".join(str(file.relative_to(self.path)) for file in corrupt[:_MAX_LISTED])
        more = f" and {len(corrupt) - _MAX_LISTED} more" if len(corrupt) > _MAX_LISTED else ""
        summary = f"{len(corrupt)} unreadable image file(s) under {self.path}: {names}{more}"
        if not self.skip_corrupt:
            raise ConfigError(
                f"{summary}. Delete or fix them, or set data.skip_corrupt=true to skip them."
            )
        rank_zero_warn(f"Skipping {summary}.")

    def _classes(self, labelled: dict[Path, list[Path]]) -> tuple[str, ...]:
        names = set()
        for root, files in labelled.items():
            for file in files:
                parts = file.relative_to(root).parts
                if len(parts) < 2:
                    raise ConfigError(
                        f"{file} is not inside a class subfolder, but "
                        "data.labels_from_subfolders=true labels each image by its top-level "
                        f"subfolder of {root}. Move it into a class folder or set "
                        "data.labels_from_subfolders=false."
                    )
                names.add(parts[0])
        return tuple(sorted(names))

    def _build_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        index = self._scan()
        if index.test is not None:
            train, val = self._carve_val(_FileDataset(index.train))
            return train, val, _FileDataset(index.test)
        total = len(index.train)
        num_val = max(1, round(total * self.val_fraction))
        num_test = max(1, round(total * self.test_fraction))
        if total - num_val - num_test < 1:
            raise ConfigError(
                f"only {total} images under {self.path}: too few to split into train, val and "
                "test. Add images, or provide data.path/train and data.path/test folders."
            )
        train, val, test = _split(
            _FileDataset(index.train),
            [total - num_val - num_test, num_val, num_test],
            self.split_seed,
        )
        return train, val, test

    def _native_hw(self) -> tuple[int, int] | None:
        return self._scan().hw

    @property
    def num_classes(self) -> int | None:
        """Number of top-level subfolders with ``labels_from_subfolders``, else ``None``."""
        return len(self._scan().classes) if self.labels_from_subfolders else None


class SyntheticDataModule(ImageDataModule):
    """Deterministic generated images: 1-4 soft coloured blobs over a colour gradient.

    Smooth, structured images an autoencoder can learn, for tests and offline smoke runs.
    The label is the number of blobs minus one (``num_classes == 4``). Each split has its own
    generator seeded from ``seed``, so changing ``num_train`` does not change val or test.
    """

    max_blobs = 4

    def __init__(
        self,
        num_train: int = 256,
        num_val: int = 64,
        num_test: int = 64,
        image_size: int = 32,
        seed: int = 0,
        **base: Any,
    ) -> None:
        if image_size is None:
            raise ConfigError(
                "data.image_size must be set for synthetic data. Use e.g. data.image_size=32."
            )
        super().__init__(image_size=image_size, **base)
        self.num_train = _check_positive_int("num_train", num_train, 256)
        self.num_val = _check_positive_int("num_val", num_val, 64)
        self.num_test = _check_positive_int("num_test", num_test, 64)
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

    @property
    def num_classes(self) -> int | None:
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


def source_of(dataset: Dataset, index: int) -> int | str:
    """Where item ``index`` of a datamodule split comes from.

    The file path for image folders; otherwise the index in the underlying dataset (the row
    of ``train.npz``/``test.npz``, the index in a torchvision set), through the val and
    train-subset ``Subset`` wrappers.
    """
    while True:
        if isinstance(dataset, _TransformedDataset):
            dataset = dataset.base
        elif isinstance(dataset, Subset):
            index, dataset = int(dataset.indices[index]), dataset.dataset
        elif isinstance(dataset, _FileDataset):
            return str(dataset.items[index][0])
        else:
            return index
