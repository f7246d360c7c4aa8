"""The base of every datamodule: transforms, loaders, the validation split, and helpers.

Every datamodule produces float32 RGB images in ``[0, 1]`` of shape ``(B, 3, H, W)`` and
int64 labels (``-1`` where a dataset has no labels). Random augmentation is applied to the
training split only; validation and test images are only converted (and resized when
``image_size`` is set).

User mistakes raise :class:`~autoencoder.errors.ConfigError` and unavailable datasets raise
:class:`~autoencoder.errors.ResourceUnavailableError`; both messages name the Hydra override
that fixes the problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, random_split
from torchvision.transforms import v2

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


class _Relabelled(Dataset):
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
        classes: Keep only the images of these labels, in every split, relabelled ``0 ..
            k-1`` in the order given (e.g. ``[5, 6, 7, 8, 9]``: the second half of CIFAR-10's
            classes); ``None`` keeps every image. Applied before ``train_subset``.
    """

    # How to give this kind of data labels, for jobs that need them (pretraining).
    labels_hint = "use a labelled dataset, e.g. data=cifar10"
    # True when the images are ready-made tensors in memory: loader workers would only copy
    # them, so num_workers=0 is the right setting, not a bottleneck.
    in_memory = False

    def __init__(
        self,
        *,
        batch_size: int = 128,
        num_workers: int = 2,
        image_size: int | None = None,
        random_crop: bool = False,
        horizontal_flip: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        pin_memory: bool = False,
        train_subset: int | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if classes is not None and (
            not classes
            or len(set(classes)) != len(classes)
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes)
        ):
            raise ConfigError(
                f"data.classes must be a list of distinct labels >= 0, got {list(classes)}. "
                "Use e.g. data.classes=[5,6,7,8,9], or data.classes=null for every class."
            )
        self.classes = None if classes is None else [int(c) for c in classes]
        self.train_subset = (
            None if train_subset is None else check_positive_int("train_subset", train_subset, 5000)
        )
        self.batch_size = check_positive_int("batch_size", batch_size, 128)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(
                f"data.num_workers must be an integer >= 0, got {num_workers!r}. "
                "Use e.g. data.num_workers=2."
            )
        self.num_workers = num_workers
        self.image_size = (
            None if image_size is None else check_positive_int("image_size", image_size, 64)
        )
        self.random_crop = bool(random_crop)
        self.horizontal_flip = bool(horizontal_flip)
        self.val_fraction = check_fraction("val_fraction", val_fraction, 0.1)
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

    def _label_count(self) -> int | None:
        """Number of label classes of the whole dataset, ``None`` when it has no labels."""
        return None

    def _label_names(self) -> Sequence[str] | None:
        """The name of every label of the whole dataset (index = label), if known."""
        return None

    @property
    def num_classes(self) -> int | None:
        """Number of label classes (of ``classes`` when set), or ``None`` when the data has
        no labels (labels are -1)."""
        return len(self.classes) if self.classes is not None else self._label_count()

    @property
    def class_names(self) -> list[str] | None:
        """The name of each label this datamodule yields (index = label), if the data names
        its classes."""
        names = self._label_names()
        if names is None:
            return None
        return [names[c] for c in self.classes] if self.classes is not None else list(names)

    def setup(self, stage: str | None = None) -> None:
        """Build all three splits once; later calls (any stage) are no-ops."""
        if self.train_set is not None:
            return
        train, val, test = self._build_splits()
        if self.classes is not None:
            train, val, test = (self._keep_classes(split) for split in (train, val, test))
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

    def _keep_classes(self, dataset: Dataset) -> Dataset:
        assert self.classes is not None
        labels = dataset_labels(dataset)
        if (labels < 0).all():
            raise ConfigError(
                f"data.classes={self.classes} needs labelled images, but this data has none. "
                "Use data.classes=null."
            )
        count = self._label_count()
        unknown = [c for c in self.classes if count is not None and c >= count]
        if unknown:
            raise ConfigError(
                f"data.classes={self.classes} names labels {unknown} that this data does not "
                f"have (its labels are 0 .. {count - 1})."
            )
        mapping = {label: index for index, label in enumerate(self.classes)}
        return _Relabelled(dataset, np.flatnonzero(np.isin(labels, self.classes)), mapping)

    def _carve_val(self, train: Dataset) -> tuple[Dataset, Dataset]:
        """Hold out ``val_fraction`` of ``train`` (at least one item each) for validation."""
        total = len(train)  # type: ignore[arg-type]
        num_val = max(1, round(total * self.val_fraction))
        if total - num_val < 1:
            raise ConfigError(
                f"only {total} training images: too few to hold out a validation split. "
                "Provide more images."
            )
        train_part, val_part = seeded_split(train, [total - num_val, num_val], self.split_seed)
        return train_part, val_part


def source_of(dataset: Dataset, index: int) -> int | str:
    """Where item ``index`` of a datamodule split comes from.

    The file path for datasets of files (those with a ``source(index)`` method, as image
    folders); otherwise the index in the underlying dataset (the row of
    ``train.npz``/``test.npz``, the index in a torchvision set), through the val and
    train-subset ``Subset`` wrappers.
    """
    while True:
        if isinstance(dataset, (_TransformedDataset, _Relabelled)):
            dataset = dataset.base
        elif isinstance(dataset, Subset):
            index, dataset = int(dataset.indices[index]), dataset.dataset
        elif hasattr(dataset, "source"):
            return dataset.source(index)
        else:
            return index
