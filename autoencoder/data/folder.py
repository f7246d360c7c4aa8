"""Any folder tree of image files, scanned and decoded once at start."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from autoencoder.data.base import ImageDataModule
from autoencoder.data.datasets import check_fraction, seeded_split, to_rgb
from autoencoder.errors import ConfigError

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_MAX_LISTED = 10


class _FileDataset(Dataset):
    """Images read from files with PIL, one ``(path, label)`` pair per item."""

    def __init__(self, items: Sequence[tuple[Path, int]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def source(self, index: int) -> str:
        """The file behind item ``index`` (see :func:`~autoencoder.data.datasets.source_of`)."""
        return str(self.items[index][0])

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

    labels_hint = (
        "data=folder needs data.labels_from_subfolders=true, with one subfolder per class "
        "(inside train/ and test/ when those exist)"
    )

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
        if self.on_device is True:
            raise ConfigError(
                "data.on_device=true needs the training images in memory, but data=folder "
                "reads each image from its file when it is loaded. Use data.on_device=auto "
                "or false (per-image loading with data.num_workers workers)."
            )
        self.path = Path(path).expanduser()
        if isinstance(extensions, str) or not extensions:
            raise ConfigError(
                f"data.extensions must be a non-empty list, got {extensions!r}. "
                "Use e.g. data.extensions=[.png,.jpg]."
            )
        self.extensions = tuple(f".{ext.lower().lstrip('.')}" for ext in map(str, extensions))
        self.test_fraction = check_fraction("test_fraction", test_fraction, 0.1)
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
        sizes, corrupt = _decoded_sizes(file for files in listed.values() for file in files)
        if corrupt:
            self._report_corrupt(corrupt)
        self._check_every_root_has_images(listed, sizes)
        distinct = self._distinct_sizes(sizes)
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

    def _check_every_root_has_images(
        self, listed: dict[Path, list[Path]], sizes: dict[Path, tuple[int, int]]
    ) -> None:
        for root, files in listed.items():
            if not any(file in sizes for file in files):
                unreadable = f", and {len(files)} unreadable" if files else ""
                raise ConfigError(
                    f"no images found under {root} (looked for extensions "
                    f"{', '.join(self.extensions)}{unreadable}). Point data.path at a folder "
                    "of images."
                )

    def _distinct_sizes(self, sizes: dict[Path, tuple[int, int]]) -> dict[tuple[int, int], Path]:
        """Each image size (W x H) found, with its first file; more than one only when
        ``data.image_size`` resizes them all."""
        distinct: dict[tuple[int, int], Path] = {}
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
        return distinct

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
        train, val, test = seeded_split(
            _FileDataset(index.train),
            [total - num_val - num_test, num_val, num_test],
            self.split_seed,
        )
        return train, val, test

    def _native_hw(self) -> tuple[int, int] | None:
        return self._scan().hw

    def _label_count(self) -> int | None:
        """Number of top-level subfolders with ``labels_from_subfolders``, else ``None``."""
        return len(self._scan().classes) if self.labels_from_subfolders else None

    def _label_names(self) -> list[str] | None:
        """The subfolder names with ``labels_from_subfolders`` (label order), else ``None``."""
        return list(self._scan().classes) if self.labels_from_subfolders else None


def _decoded_sizes(files: Iterable[Path]) -> tuple[dict[Path, tuple[int, int]], list[Path]]:
    """The size (W x H) of every image that decodes in full, and the files that do not."""
    sizes: dict[Path, tuple[int, int]] = {}
    corrupt: list[Path] = []
    for file in files:
        try:
            with Image.open(file) as image:
                sizes[file] = image.size
                image.load()
        except Exception:  # PIL signals bad files with many exception types
            sizes.pop(file, None)
            corrupt.append(file)
    return sizes, corrupt
