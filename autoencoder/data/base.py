"""The base of every datamodule: transforms, loaders and the validation split (the dataset
wrappers the splits are made of: :mod:`autoencoder.data.datasets`).

Every datamodule produces float32 RGB images in ``[0, 1]`` of shape ``(B, 3, H, W)`` and
int64 labels (``-1`` where a dataset has no labels). Random augmentation is applied to the
training split only; validation and test images are only converted (and resized when
``image_size`` is set). Training batches of data held in memory are drawn on the training
device (``data.on_device``, :mod:`autoencoder.data.on_device`); everything else is loaded
per image.

User mistakes raise :class:`~autoencoder.errors.ConfigError` and unavailable datasets raise
:class:`~autoencoder.errors.ResourceUnavailableError`; both messages name the Hydra override
that fixes the problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from autoencoder.data.datasets import (
    Relabelled,
    TransformedDataset,
    check_fraction,
    check_positive_int,
    dataset_labels,
    seeded_split,
)
from autoencoder.data.on_device import DeviceBatches, EpochSeededSampler, lightning_shard
from autoencoder.errors import ConfigError

# data.on_device=auto draws training batches on a CUDA device when the training images take
# at most this share of its free memory, leaving the rest to the model.
AUTO_DEVICE_MEMORY_SHARE = 0.25


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
        on_device: Where training batches are made. ``True``: the training split's images
            are kept as one tensor on the training device (uint8 for 8-bit data, float32
            for generated images), resized once up front, and every batch is gathered by
            index, flipped and cropped as a whole and converted to float there
            (:class:`~autoencoder.data.on_device.DeviceBatches`); a datamodule that does
            not hold its images in memory (``data=folder``) raises a ``ConfigError``.
            ``False``: per image, a ``DataLoader`` over the transformed dataset (workers,
            torchvision transforms, collation). ``"auto"`` (the default): on the device
            when the images are in memory (arrays, the torchvision sets, synthetic) and,
            on a GPU, take at most a quarter of its free memory; on the CPU too, where the
            device is the CPU; else per image, which the log says with the reason. Both
            paths give the same order from the same seed, the same shard to each DDP
            rank, and without ``random_crop``/``horizontal_flip`` the same batches to the
            bit, so turning it on changes no result of an unaugmented run; flips and crops
            follow the same distributions but are drawn from a generator seeded from
            (seed, epoch, rank) rather than torchvision's per-image draws from the global
            random state, so an augmented run draws other flips and crops than before
            (``data.on_device=false`` repeats those). Validation and test are always
            loaded per image: they are small and read once an epoch.
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
        on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        if not (isinstance(on_device, bool) or on_device == "auto"):
            raise ConfigError(
                f"data.on_device must be true, false or auto, got {on_device!r}. "
                "Use e.g. data.on_device=auto."
            )
        self.on_device = on_device
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
        # the training split as (images, labels) tensors, once built, on the last device used
        self._train_tensors: tuple[torch.Tensor, torch.Tensor] | None = None

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

    def _pixels(self, dataset: Dataset) -> torch.Tensor | None:
        """Every image of a raw dataset (not a ``Subset``) as one ``(N, 3, H, W)`` tensor
        with the values the per-image transform starts from, or ``None`` when the dataset
        does not hold its images in memory. Datasets that do say so with a ``pixels()``
        method; subclasses add datasets they cannot give one (torchvision's)."""
        pixels = getattr(dataset, "pixels", None)
        return pixels() if callable(pixels) else None

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
        self.train_set = TransformedDataset(train, self._transform(train=True))
        self.val_set = TransformedDataset(val, self._transform(train=False))
        self.test_set = TransformedDataset(test, self._transform(train=False))

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        """The training batches, drawn on the training device or loaded per image as
        ``on_device`` decides (see the class docstring). The device, and the DDP rank's
        shard, are the attached trainer's; without a trainer, the CPU and one shard."""
        self.setup()
        if self.on_device is False:
            return self._loader("train")
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        problem = self._on_device_problem(device, trainer)
        if problem is None:
            loader = self.device_batches(device, lightning_shard(trainer))
            images = loader.images
            rank_zero_info(
                f"data.on_device={str(self.on_device).lower()}: training batches drawn on "
                f"{device} from one {str(images.dtype).removeprefix('torch.')} tensor of "
                f"{tuple(images.shape)} ({_mebibytes(images):.1f} MiB)"
            )
            return loader
        if self.on_device is True:
            raise ConfigError(
                f"data.on_device=true: {problem}. Use data.on_device=false (or auto, which "
                "loads per image where it must)."
            )
        rank_zero_info(f"data.on_device=auto: training batches loaded per image: {problem}")
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def device_batches(
        self, device: torch.device, shard: tuple[int, int] | None = None
    ) -> DeviceBatches:
        """The training batches drawn on ``device`` (``shard``: ``(num_replicas, rank)``
        under DDP), whatever ``on_device`` says; a ``ConfigError`` when the images are not
        in memory. The tensors are built once and kept on the device last asked for."""
        tensors = self._stacked_train()
        if tensors is None:
            raise ConfigError(
                f"data.on_device=true: {self._not_in_memory()}. Use data.on_device=false."
            )
        # One copy at a time: the tensors move to the device asked for last.
        images, labels = self._train_tensors = (tensors[0].to(device), tensors[1].to(device))
        return DeviceBatches(
            images,
            labels,
            batch_size=self.batch_size,
            seed=torch.initial_seed(),
            crop_padding=self._crop_padding() if self.random_crop else 0,
            horizontal_flip=self.horizontal_flip,
            shard=shard,
            dataset=self.train_set,
        )

    # -- helpers ----------------------------------------------------------------------------

    def _on_device_problem(self, device: torch.device, trainer: pl.Trainer | None) -> str | None:
        """Why the training batches cannot (or, under ``auto``, should not) be drawn on
        ``device``; ``None`` when they will be."""
        if trainer is not None and trainer.overfit_batches > 0:
            return (
                "trainer.overfit_batches replaces the training loader's sampler, which only a "
                "DataLoader supports"
            )
        tensors = self._stacked_train()
        if tensors is None:
            return self._not_in_memory()
        if self.on_device is True or device.type == "cpu" or tensors[0].device == device:
            return None
        if device.type != "cuda":
            return f"auto draws them on the CPU or a CUDA device, not on {device.type}"
        free, _ = torch.cuda.mem_get_info(device)
        needed = _mebibytes(tensors[0])
        if needed > AUTO_DEVICE_MEMORY_SHARE * free / 2**20:
            return (
                f"the training images ({needed:.1f} MiB) take more than "
                f"{AUTO_DEVICE_MEMORY_SHARE:.0%} of the free memory of {device} "
                f"({free / 2**20:.0f} MiB); data.on_device=true forces it"
            )
        return None

    def _not_in_memory(self) -> str:
        return (
            f"{type(self).__name__} does not hold its training images in memory (it reads "
            "them one at a time)"
        )

    def _stacked_train(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The training split as ``(N, 3, H, W)`` images at the training size and ``(N,)``
        int64 labels (built on the CPU once, then on the device last used), or ``None`` when
        it is not held in memory."""
        self.setup()
        if self._train_tensors is None:
            assert isinstance(self.train_set, TransformedDataset)
            stacked = self._stack(self.train_set.base)
            if stacked is None:
                return None
            images, labels = stacked
            self._train_tensors = (self._resized(images).contiguous(), labels)
        return self._train_tensors

    def _stack(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Every image and label of a raw training split (through its ``Subset`` and
        relabelling wrappers) as two tensors, or ``None`` when it is not held in memory."""
        if isinstance(dataset, Relabelled):
            stacked = self._stack(dataset.base)
            if stacked is None:
                return None
            images, labels = stacked
            table = torch.full((max(dataset.mapping) + 1,), -1, dtype=torch.int64)
            table[list(dataset.mapping)] = torch.tensor(list(dataset.mapping.values()))
            return images, table[labels]
        if isinstance(dataset, Subset):
            stacked = self._stack(dataset.dataset)
            if stacked is None:
                return None
            index = torch.as_tensor(dataset.indices, dtype=torch.int64)
            return stacked[0][index], stacked[1][index]
        images = self._pixels(dataset)
        if images is None:
            return None
        return images, torch.from_numpy(dataset_labels(dataset))

    def _resized(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` at ``image_size``, resized as the per-image transform resizes (the
        same kernel on the same values, on the CPU), a chunk at a time."""
        native = self._native_hw()
        if self.image_size is None or native == (self.image_size, self.image_size):
            return images
        size = [self.image_size, self.image_size]
        chunks = torch.split(images, 1024)
        return torch.cat([v2.functional.resize(chunk, size, antialias=True) for chunk in chunks])

    def _crop_padding(self) -> int:
        """The reflect padding of ``random_crop``: an eighth of the shorter side."""
        _, height, width = self.image_shape
        return max(1, round(min(height, width) / 8))

    def _transform(self, *, train: bool) -> v2.Compose:
        steps: list[Callable[[Any], Any]] = [v2.ToImage()]
        native = self._native_hw()
        if self.image_size is not None and native != (self.image_size, self.image_size):
            steps.append(v2.Resize((self.image_size, self.image_size), antialias=True))
        _, height, width = self.image_shape
        if train and self.random_crop:
            steps.append(
                v2.RandomCrop((height, width), padding=self._crop_padding(), padding_mode="reflect")
            )
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
        return Relabelled(dataset, np.flatnonzero(np.isin(labels, self.classes)), mapping)

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


def _mebibytes(tensor: torch.Tensor) -> float:
    return tensor.numel() * tensor.element_size() / 2**20
