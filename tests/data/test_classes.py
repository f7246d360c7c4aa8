"""``data.classes``: a class split of a labelled dataset, relabelled, with class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoencoder.data import ArraysDataModule, SyntheticDataModule, source_of
from autoencoder.errors import ConfigError
from tests.conftest import make_images

NAMES = [f"class{i}" for i in range(10)]


def write(folder: Path, names: bool = True) -> Path:
    folder.mkdir()
    for split, count, seed in (("train", 100, 0), ("test", 40, 1)):
        extra = {"classes": np.array(NAMES)} if names and split == "train" else {}
        np.savez(
            folder / f"{split}.npz",
            images=make_images(count, seed=seed),
            labels=np.arange(count) % 10,
            **extra,
        )
    return folder


def test_a_class_split_keeps_those_images_relabelled_in_order(tmp_path: Path) -> None:
    data = ArraysDataModule(write(tmp_path / "a"), classes=[7, 2], val_fraction=0.2, num_workers=0)
    data.setup()
    assert data.num_classes == 2 and data.class_names == ["class7", "class2"]
    for split, size in (("train", None), ("val", None), ("test", 8)):
        dataset = getattr(data, f"{split}_set")
        labels = [dataset[i][1] for i in range(len(dataset))]
        assert set(labels) <= {0, 1} and (split == "val" or set(labels) == {0, 1})
        if size:
            assert len(dataset) == size
        # each item still traces back to its row of the arrays file, whose label it had
        originals = np.load(data.path / f"{'test' if split == 'test' else 'train'}.npz")["labels"]
        for index, label in enumerate(labels):
            assert originals[source_of(dataset, index)] == [7, 2][label]
    assert len(data.train_set) + len(data.val_set) == 20


def test_train_subset_counts_images_of_the_kept_classes(tmp_path: Path) -> None:
    data = ArraysDataModule(
        write(tmp_path / "a"), classes=[0, 1, 2], train_subset=10, num_workers=0
    )
    data.setup()
    assert len(data.train_set) == 10
    assert {data.train_set[i][1] for i in range(10)} <= {0, 1, 2}


def test_names_are_known_only_where_the_data_gives_them(tmp_path: Path) -> None:
    data = ArraysDataModule(write(tmp_path / "a", names=False), num_workers=0)
    assert data.num_classes == 10 and data.class_names is None
    assert SyntheticDataModule().class_names is None


@pytest.mark.parametrize(
    ("classes", "message"),
    [([], "distinct labels"), ([1, 1], "distinct labels"), ([-1], "distinct labels")],
)
def test_invalid_class_lists_are_refused(tmp_path: Path, classes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        ArraysDataModule(tmp_path, classes=classes)


def test_labels_the_data_lacks_are_refused(tmp_path: Path) -> None:
    data = ArraysDataModule(write(tmp_path / "a"), classes=[3, 12], num_workers=0)
    with pytest.raises(ConfigError, match=r"labels \[12\]"):
        data.setup()
