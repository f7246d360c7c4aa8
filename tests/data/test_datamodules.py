"""Tests for autoencoder.data on tiny generated data (no network, no shared datasets)."""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from autoencoder.data import (
    ArraysDataModule,
    CIFAR10DataModule,
    CIFAR100DataModule,
    FolderDataModule,
    ImageDataModule,
    STL10DataModule,
    SyntheticDataModule,
)
from autoencoder.errors import ConfigError, ResourceUnavailableError
from tests.conftest import compose_job


def _all_items(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


# -- arrays -------------------------------------------------------------------------------


def _write_arrays(
    folder: Path, n_train: int = 20, n_test: int = 6, shape: tuple[int, ...] = (8, 6, 3)
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    train = rng.integers(0, 256, (n_train, *shape), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, *shape), dtype=np.uint8)
    np.savez(folder / "train.npz", images=train, labels=np.arange(n_train))
    np.savez(folder / "test.npz", images=test, labels=np.arange(n_test) % 3)
    return train, test


def test_arrays_shapes_dtypes_and_splits(tmp_path: Path) -> None:
    _, test = _write_arrays(tmp_path)
    dm = ArraysDataModule(tmp_path, batch_size=4, val_fraction=0.25)
    assert dm.image_shape == (3, 8, 6)  # known before setup
    assert dm.num_classes == 20
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 5, 6)
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (4, 3, 8, 6) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 0]
    expected = torch.from_numpy(test[:4]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(images, expected)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # The arrays stay uint8 in memory; conversion happens per item.
    assert dm.train_set.base.dataset.images.dtype == np.uint8
    batches = list(dm.train_dataloader())
    assert sum(len(b[0]) for b in batches) == 15  # drop_last=False


def test_arrays_val_carve_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    _write_arrays(tmp_path)
    splits = []
    for _ in range(2):
        dm = ArraysDataModule(tmp_path, val_fraction=0.2)
        dm.setup()
        splits.append((_all_items(dm.train_set)[1], _all_items(dm.val_set)[1]))
    (train_a, val_a), (train_b, val_b) = splits
    assert torch.equal(val_a, val_b) and torch.equal(train_a, train_b)
    assert sorted(train_a.tolist() + val_a.tolist()) == list(range(20))
    other = ArraysDataModule(tmp_path, val_fraction=0.2, split_seed=1)
    other.setup()
    assert not torch.equal(_all_items(other.val_set)[1], val_a)


def test_arrays_grayscale_and_unlabelled(tmp_path: Path) -> None:
    gray = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5) * 6
    np.savez(tmp_path / "train.npz", images=np.concatenate([gray, gray]))
    np.savez(tmp_path / "test.npz", images=gray)
    dm = ArraysDataModule(tmp_path, val_fraction=0.5)
    dm.setup()
    assert dm.num_classes is None and dm.image_shape == (3, 4, 5)
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (2, 3, 4, 5) and labels.tolist() == [-1, -1]
    torch.testing.assert_close(images[:, 0], torch.from_numpy(gray).float() / 255)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])


def test_arrays_resizes_when_image_size_set(tmp_path: Path) -> None:
    _write_arrays(tmp_path)
    dm = ArraysDataModule(tmp_path, image_size=12)
    dm.setup()
    assert dm.image_shape == (3, 12, 12)
    assert dm.test_set[0][0].shape == (3, 12, 12)


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        ({"pictures": np.zeros((2, 4, 4, 3), np.uint8)}, "no key 'images'"),
        ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "expected uint8"),
        ({"images": np.zeros((2, 4, 4, 4), np.uint8)}, "N x H x W x 3"),
        ({"images": np.zeros((0, 4, 4, 3), np.uint8)}, "N > 0"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.arange(3)}, "one per image"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.zeros(2)}, "integers"),
    ],
)
def test_arrays_bad_content_raises_config_error(
    tmp_path: Path, contents: dict[str, np.ndarray], expected: str
) -> None:
    _write_arrays(tmp_path)
    np.savez(tmp_path / "train.npz", **contents)
    with pytest.raises(ConfigError, match=expected) as info:
        ArraysDataModule(tmp_path).setup()
    assert "train.npz" in str(info.value) and "key 'images'" in str(info.value)


def test_arrays_missing_folder_file_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.path=.*missing.*train\.npz and test\.npz"):
        ArraysDataModule(tmp_path / "missing").setup()
    _write_arrays(tmp_path)
    (tmp_path / "test.npz").unlink()
    with pytest.raises(ConfigError, match=r"test\.npz not found"):
        ArraysDataModule(tmp_path).setup()
    (tmp_path / "test.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ConfigError, match=r"test\.npz is not a readable \.npz"):
        ArraysDataModule(tmp_path).setup()


def test_arrays_train_test_size_mismatch_needs_image_size(tmp_path: Path) -> None:
    _write_arrays(tmp_path)
    np.savez(tmp_path / "test.npz", images=np.zeros((2, 5, 5, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"data\.image_size=N"):
        ArraysDataModule(tmp_path).setup()
    dm = ArraysDataModule(tmp_path, image_size=5)
    dm.setup()
    assert dm.train_set[0][0].shape == dm.test_set[0][0].shape == (3, 5, 5)


@pytest.mark.parametrize(
    ("kwargs", "override"),
    [
        ({"batch_size": 0}, "data.batch_size="),
        ({"num_workers": -1}, "data.num_workers="),
        ({"image_size": 0}, "data.image_size="),
        ({"val_fraction": 1.0}, "data.val_fraction="),
    ],
)
def test_invalid_base_arguments_name_the_override(
    tmp_path: Path, kwargs: dict[str, float], override: str
) -> None:
    with pytest.raises(ConfigError, match=override):
        ArraysDataModule(tmp_path, **kwargs)


# -- folder -------------------------------------------------------------------------------


def _save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _rgb(color: tuple[int, int, int], size: tuple[int, int] = (6, 4)) -> Image.Image:
    return Image.new("RGB", size, color)


def _mixed_folder(root: Path) -> None:
    """Eight 6x4 images in assorted modes, a text file and a corrupt PNG."""
    _save(_rgb((255, 0, 0)), root / "a_rgb.png")
    _save(_rgb((0, 0, 255)), root / "sub" / "b.jpg")
    _save(Image.new("L", (6, 4), 128), root / "sub" / "deeper" / "gray.png")
    _save(Image.new("RGBA", (6, 4), (0, 255, 0, 10)), root / "rgba.png")
    _save(Image.fromarray(np.full((4, 6), 257 * 100, np.uint16)), root / "sixteen.png")
    _save(_rgb((0, 0, 255)).convert("P"), root / "palette.gif")
    _save(_rgb((9, 9, 9)), root / "c.bmp")
    _save(_rgb((1, 2, 3)), root / "upper.PNG")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)


def _folder_items(dm: FolderDataModule) -> dict[str, torch.Tensor]:
    dm.setup()
    dataset = dm.train_set.base.dataset  # the full _FileDataset before the split
    transform = dm.test_set.transform
    return {path.name: transform(dataset[i][0]) for i, (path, _) in enumerate(dataset.items)}


def test_folder_converts_modes_ignores_other_files_and_skips_corrupt(tmp_path: Path) -> None:
    _mixed_folder(tmp_path)
    dm = FolderDataModule(tmp_path, batch_size=16, val_fraction=0.25, test_fraction=0.25)
    with pytest.warns(UserWarning, match=r"1 unreadable image file\(s\).*broken\.png"):
        dm.setup()
    assert dm.image_shape == (3, 4, 6) and dm.num_classes is None
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (4, 2, 2)
    items = _folder_items(dm)
    assert "notes.txt" not in items and "broken.png" not in items and "upper.PNG" in items
    for image in items.values():
        assert image.shape == (3, 4, 6) and image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
    torch.testing.assert_close(items["a_rgb.png"][:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(items["gray.png"][:, 0, 0], torch.full((3,), 128 / 255))
    torch.testing.assert_close(items["rgba.png"][:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(items["sixteen.png"][:, 0, 0], torch.full((3,), 100 / 255))
    torch.testing.assert_close(items["palette.gif"][:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 4, 6) and labels.tolist() == [-1] * 4


def test_folder_skip_corrupt_false_raises(tmp_path: Path) -> None:
    _mixed_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"broken\.png.*data\.skip_corrupt=true"):
        FolderDataModule(tmp_path, skip_corrupt=False).setup()


def test_folder_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("only text here")
    with pytest.raises(ConfigError, match=r"no images found under .*Point data\.path at a folder"):
        FolderDataModule(tmp_path).setup()
    with pytest.raises(ConfigError, match="not an existing folder"):
        FolderDataModule(tmp_path / "nope").setup()


def test_folder_different_sizes_need_image_size(tmp_path: Path) -> None:
    for i in range(4):
        _save(_rgb((i * 50, 0, 0), size=(6 + i, 4)), tmp_path / f"{i}.png")
    with pytest.raises(ConfigError, match=r"different sizes.*data\.image_size=N"):
        FolderDataModule(tmp_path).setup()
    dm = FolderDataModule(tmp_path, image_size=5, val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert dm.image_shape == (3, 5, 5)
    assert {tuple(dm.train_set[i][0].shape) for i in range(len(dm.train_set))} == {(3, 5, 5)}


def test_folder_train_test_subfolders_with_labels(tmp_path: Path) -> None:
    for split, count in (("train", 4), ("test", 2)):
        for name, color in (("dogs", (200, 0, 0)), ("cats", (0, 200, 0))):
            for i in range(count):
                _save(_rgb(color), tmp_path / split / name / f"{i}.png")
    dm = FolderDataModule(tmp_path, labels_from_subfolders=True, val_fraction=0.25)
    assert dm.num_classes == 2
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 2, 4)
    images, labels = _all_items(dm.test_set)
    # "cats" < "dogs": cats (green) are class 0, dogs (red) class 1.
    assert sorted(labels.tolist()) == [0, 0, 1, 1]
    for image, label in zip(images, labels, strict=True):
        assert image[1 - label, 0, 0] == pytest.approx(200 / 255)


def test_folder_labels_from_subfolders_rejects_loose_files(tmp_path: Path) -> None:
    _save(_rgb((1, 1, 1)), tmp_path / "cls" / "a.png")
    _save(_rgb((1, 1, 1)), tmp_path / "loose.png")
    with pytest.raises(ConfigError, match=r"loose\.png.*data\.labels_from_subfolders=false"):
        FolderDataModule(tmp_path, labels_from_subfolders=True).setup()


# -- synthetic ----------------------------------------------------------------------------


def test_synthetic_is_deterministic_structured_and_in_range() -> None:
    first = SyntheticDataModule(num_train=16, num_val=4, num_test=4, batch_size=8)
    second = SyntheticDataModule(num_train=16, num_val=4, num_test=4, batch_size=8)
    first.setup()
    second.setup()
    images, labels = _all_items(first.train_set)
    assert images.shape == (16, 3, 32, 32) and first.image_shape == (3, 32, 32)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.05  # not blank
    assert set(labels.tolist()) <= set(range(first.num_classes))
    assert torch.equal(images, _all_items(second.train_set)[0])
    assert not torch.equal(images[:4], _all_items(first.val_set)[0])
    other_seed = SyntheticDataModule(num_train=16, seed=1)
    other_seed.setup()
    assert not torch.equal(images, _all_items(other_seed.train_set)[0][:16])
    batch, batch_labels = next(iter(first.train_dataloader()))
    assert batch.shape == (8, 3, 32, 32) and batch_labels.dtype == torch.int64


def test_synthetic_val_does_not_depend_on_num_train() -> None:
    small, large = SyntheticDataModule(num_train=8), SyntheticDataModule(num_train=32)
    small.setup()
    large.setup()
    assert torch.equal(_all_items(small.val_set)[0], _all_items(large.val_set)[0])


# -- augmentation -------------------------------------------------------------------------


def test_augmentation_only_on_train(tmp_path: Path) -> None:
    # Asymmetric images (a horizontal ramp), so any flip or shifted crop changes them.
    ramp = np.broadcast_to(np.arange(16, dtype=np.uint8)[None, :, None] * 16, (16, 16, 3))
    images = np.stack([ramp] * 10)
    np.savez(tmp_path / "train.npz", images=images)
    np.savez(tmp_path / "test.npz", images=images[:2])
    plain = torch.from_numpy(ramp.copy()).permute(2, 0, 1).float() / 255
    dm = ArraysDataModule(tmp_path, random_crop=True, horizontal_flip=True, val_fraction=0.2)
    dm.setup()
    torch.manual_seed(0)
    train_draws = [dm.train_set[0][0] for _ in range(20)]
    assert any(not torch.allclose(draw, plain) for draw in train_draws)
    assert len({draw.numpy().tobytes() for draw in train_draws}) > 1
    for dataset in (dm.val_set, dm.test_set):
        for _ in range(5):
            torch.testing.assert_close(dataset[0][0], plain)
    unaugmented = ArraysDataModule(tmp_path)
    unaugmented.setup()
    for _ in range(5):
        torch.testing.assert_close(unaugmented.train_set[0][0], plain)


# -- torchvision datasets offline ---------------------------------------------------------


@pytest.mark.parametrize(
    ("module_cls", "dataset_cls", "name"),
    [
        (CIFAR10DataModule, torchvision.datasets.CIFAR10, "CIFAR-10"),
        (CIFAR100DataModule, torchvision.datasets.CIFAR100, "CIFAR-100"),
        (STL10DataModule, torchvision.datasets.STL10, "STL-10"),
    ],
)
def test_torchvision_offline_raises_resource_unavailable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module_cls: type[ImageDataModule],
    dataset_cls: type,
    name: str,
) -> None:
    def no_network(self: object) -> None:
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setattr(dataset_cls, "download", no_network)
    dm = module_cls(root=tmp_path)
    assert dm.image_shape[0] == 3 and dm.num_classes in (10, 100)
    with pytest.raises(ResourceUnavailableError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert message.startswith(f"{name} is not in {tmp_path}")
    assert "Temporary failure in name resolution" in message
    assert "data=arrays data.path=" in message and "data.root=" in message
    with pytest.raises(ResourceUnavailableError, match="data=arrays"):
        dm.setup("fit")
    with pytest.raises(ResourceUnavailableError, match=r"data\.download=false"):
        module_cls(root=tmp_path, download=False).setup("fit")


# -- Hydra configs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10", "folder", "arrays", "synthetic"])
def test_hydra_config_instantiates(name: str, tmp_path: Path) -> None:
    cfg = compose_job("train", "~experiment", f"data={name}", f"paths.data_dir={tmp_path}")
    node = cfg.data
    module_name, class_name = node._target_.rsplit(".", 1)
    target = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(target, ImageDataModule)
    needs_path = name in ("folder", "arrays")
    assert OmegaConf.is_missing(cfg.data, "path") == needs_path  # mandatory: path: ???
    if needs_path:
        cfg.data.path = str(tmp_path)
    dm = instantiate(cfg.data)
    assert type(dm) is target
    assert dm.batch_size == node.batch_size and dm.image_size == node.image_size
    if name != "synthetic":
        assert Path(dm.root if hasattr(dm, "root") else dm.path) == tmp_path


def test_train_subset_keeps_a_fixed_low_data_split(arrays_dir) -> None:
    full = ArraysDataModule(path=arrays_dir, val_fraction=0.25)
    small = ArraysDataModule(path=arrays_dir, val_fraction=0.25, train_subset=20)
    again = ArraysDataModule(path=arrays_dir, val_fraction=0.25, train_subset=20)
    for module in (full, small, again):
        module.setup("fit")
    assert len(full.train_set) == 72 and len(small.train_set) == 20
    assert len(small.val_set) == len(full.val_set) == 24
    first = torch.stack([small.train_set[i][0] for i in range(20)])
    torch.testing.assert_close(first, torch.stack([again.train_set[i][0] for i in range(20)]))
    with pytest.raises(ConfigError, match="train_subset"):
        ArraysDataModule(path=arrays_dir, train_subset=0)


def test_a_saved_run_config_with_the_old_module_targets_still_builds(
    arrays_dir: Path, tmp_path: Path
) -> None:
    """Runs saved before the datamodules became a package name ``autoencoder.data.X`` in
    their ``.hydra/config.yaml``; the package re-exports every class under that name."""
    saved = tmp_path / "config.yaml"
    saved.write_text(
        "data:\n"
        "  _target_: autoencoder.data.ArraysDataModule\n"
        f"  path: {arrays_dir}\n"
        "  batch_size: 8\n"
        "  num_workers: 0\n"
    )
    datamodule = instantiate(OmegaConf.load(saved).data)
    assert type(datamodule) is ArraysDataModule
    assert type(datamodule).__module__ == "autoencoder.data.arrays"
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64
