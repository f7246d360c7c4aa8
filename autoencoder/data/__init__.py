"""LightningDataModules yielding ``(images, labels)`` batches of [0, 1] RGB images.

One module per kind of source; the public classes are re-exported here, so config targets
such as ``autoencoder.data.ArraysDataModule`` (in ``conf/data/`` and in the saved
``.hydra/config.yaml`` of earlier runs) resolve.
"""

from autoencoder.data.arrays import ArraysDataModule
from autoencoder.data.base import ImageDataModule
from autoencoder.data.datasets import source_of, to_rgb
from autoencoder.data.folder import FolderDataModule
from autoencoder.data.on_device import DeviceBatches, EpochSeededSampler
from autoencoder.data.synthetic import SyntheticDataModule, generate_shapes
from autoencoder.data.torchvision_sets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    STL10DataModule,
)

__all__ = [
    "ArraysDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DeviceBatches",
    "EpochSeededSampler",
    "FolderDataModule",
    "ImageDataModule",
    "STL10DataModule",
    "SyntheticDataModule",
    "generate_shapes",
    "source_of",
    "to_rgb",
]
