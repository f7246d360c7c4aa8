"""The order of the training batches, and batches drawn from one tensor on the training
device (``data.on_device``).

The per-image path (a ``DataLoader`` over the transformed dataset) calls Python once per
image: fetch, transform, collate. With the whole training split as one tensor on the device
(as KellerJordan/cifar10-airbench keeps CIFAR-10 on the GPU), a batch is one gather by
index, its flips and crops are folded into that gather, and its conversion to float is one
more kernel, so the device does not wait for the CPU between steps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import Dataset, Sampler

from autoencoder.compat import uses_distributed_sampler


class EpochSeededSampler(Sampler[int]):
    """Random order drawn from ``(seed, epoch)`` alone; both loading paths use it.

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


class DeviceBatches:
    """``(images, labels)`` batches of an in-memory training split, already on its device.

    Lightning takes any iterable with ``len()`` as a training loader and leaves it as it is:
    no sampler injection, no workers, and its device transfer is a no-op on tensors already
    on the device. What Lightning does for the per-image ``DataLoader``, this object does
    itself, so both give the same images in the same order:

    - **Order**: an :class:`EpochSeededSampler` (``seed + epoch``); Lightning calls
      ``sampler.set_epoch`` before every epoch, as it does on a ``DataLoader``'s sampler.
    - **DDP**: with ``shard=(num_replicas, rank)`` that sampler is wrapped in Lightning's own
      ``DistributedSamplerWrapper`` with the arguments Lightning gives it when it wraps the
      per-image loader's sampler (``shuffle=True``, ``seed=PL_GLOBAL_SEED``, no dropping), so
      every rank gets the indices the per-image path gives that rank.
    - **Augmentation**: horizontal flips and reflect-padded random crops, drawn for the whole
      epoch from a CPU generator seeded from ``(seed, epoch, rank)``. The batches of an epoch
      are a function of those alone, on any device, so a resumed run sees the batches an
      uninterrupted one sees (the per-image path draws its flips and crops from the global
      random state instead, which a resume does not restore).

    Args:
        images: ``(N, 3, H, W)``, uint8 (converted to ``[0, 1]`` floats per batch as
            torchvision's ``ToDtype(scale=True)`` does) or floats in ``[0, 1]`` (kept), at the
            training size and on the training device.
        labels: ``(N,)`` int64 on the same device.
        batch_size: images per batch; the last batch of an epoch may be smaller.
        seed: seed of the order and of the augmentation draws.
        crop_padding: reflect-pad by this many pixels, then crop back to ``H x W`` at a
            random offset; 0: no crop.
        horizontal_flip: flip left-right with probability 0.5.
        shard: ``(num_replicas, rank)`` under DDP; ``None`` on one device.
        dataset: the per-image dataset of the same split, for code that reads
            ``loader.dataset[index]``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        seed: int,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        shard: tuple[int, int] | None = None,
        dataset: Dataset | None = None,
    ) -> None:
        if len(images) != len(labels) or images.device != labels.device:
            raise ValueError(
                f"images ({len(images)} on {images.device}) and labels ({len(labels)} on "
                f"{labels.device}) must have the same length and device"
            )
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.crop_padding = crop_padding
        self.horizontal_flip = horizontal_flip
        self.dataset = dataset
        self.order = EpochSeededSampler(len(images), seed)
        self.rank = 0 if shard is None else shard[1]
        self.sampler: EpochSeededSampler | DistributedSamplerWrapper = self.order
        if shard is not None:
            num_replicas, rank = shard
            self.sampler = DistributedSamplerWrapper(
                self.order,
                num_replicas=num_replicas,
                rank=rank,
                shuffle=True,
                seed=int(os.getenv("PL_GLOBAL_SEED", 0)),
            )

    @property
    def device(self) -> torch.device:
        return self.images.device

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def indices(self) -> list[int]:
        """The dataset indices of this epoch (this rank's shard), in batch order."""
        return list(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(self.indices(), dtype=torch.int64)
        augmented = self.crop_padding > 0 or self.horizontal_flip
        if augmented:
            offsets, flips = self.augmentation_draws(len(order))
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        order = order.to(self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            if augmented:
                batch = crop_and_flip(
                    self.images,
                    index,
                    offsets[start : start + self.batch_size],
                    flips[start : start + self.batch_size],
                    self.crop_padding,
                )
            else:
                batch = self.images[index]
            yield to_float(batch), self.labels[index]

    def augmentation_draws(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop offsets ``(count, 2)`` (top, left in ``0 .. 2 * crop_padding``; all 0
        without cropping) and flips ``(count,)`` of this epoch's images, in batch order."""
        entropy = (self.order.seed, self.order.epoch, self.rank)
        state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        flips = torch.rand(count, generator=generator) < 0.5
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (count, 2), generator=generator)
        return offsets, flips & self.horizontal_flip


def crop_and_flip(
    images: torch.Tensor,
    index: torch.Tensor,
    offsets: torch.Tensor,
    flips: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """``images[index]``, each reflect-padded by ``padding``, cropped back to its size at
    ``offsets`` (top, left) and flipped left-right where ``flips``: one gather.

    The same pixels as torchvision's ``RandomCrop(padding=padding, padding_mode="reflect")``
    at that offset followed by ``RandomHorizontalFlip`` when it flips: a padded coordinate
    ``k`` outside the image reads the pixel ``|k|`` (top, left) or ``2 (n - 1) - k`` (bottom,
    right), the reflection that leaves the edge pixel unrepeated.
    """
    _, _, height, width = images.shape
    rows = _reflect(torch.arange(height, device=images.device) + offsets[:, :1] - padding, height)
    cols = _reflect(torch.arange(width, device=images.device) + offsets[:, 1:] - padding, width)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    # Advanced indices split by a slice put their (B, H, W) first: (B, H, W, C).
    picked = images[index[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2).contiguous()


def _reflect(coordinates: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect coordinates in ``-(size - 1) .. 2 (size - 1)`` into ``0 .. size - 1``."""
    return (size - 1) - ((size - 1) - coordinates.abs()).abs()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to ``[0, 1]`` float32 with torchvision's arithmetic (``ToDtype(float32,
    scale=True)``: a cast, then times 1/255), so both paths give the same floats; floats are
    only cast."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).mul_(1.0 / 255)
    return images.to(torch.float32)


def lightning_shard(trainer: pl.Trainer | None) -> tuple[int, int] | None:
    """``(num_replicas, rank)`` when Lightning would wrap a training ``DataLoader``'s sampler
    in a ``DistributedSamplerWrapper`` (a distributed strategy and the Trainer's
    ``use_distributed_sampler``), else ``None``."""
    if trainer is None:
        return None
    kwargs = trainer.distributed_sampler_kwargs
    if kwargs is None or not uses_distributed_sampler(trainer):
        return None
    return int(kwargs["num_replicas"]), int(kwargs["rank"])
