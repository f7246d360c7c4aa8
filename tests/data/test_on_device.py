"""Training batches drawn on the device (``data.on_device``) against the per-image loader:
the same order, shards and (without augmentation) images; valid flips and crops of the same
distributions; reproducible epochs; real fits. All on small generated data, on the CPU."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from lightning_fabric.utilities.data import _set_sampler_epoch
from pytorch_lightning.trainer.connectors.data_connector import (
    _get_distributed_sampler,
    _update_dataloader,
)
from pytorch_lightning.trainer.states import RunningStage
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from autoencoder.data import (
    ArraysDataModule,
    CIFAR10DataModule,
    DeviceBatches,
    FolderDataModule,
    ImageDataModule,
    STL10DataModule,
    SyntheticDataModule,
)
from autoencoder.data.on_device import crop_and_flip, lightning_shard
from autoencoder.errors import ConfigError
from autoencoder.train import train
from tests.conftest import DDP_ENV, DDP_ON_CPU, run_script

CPU = torch.device("cpu")


def write_arrays(
    folder: Path, count: int = 45, shape: tuple[int, ...] = (8, 6, 3), seed: int = 0
) -> Path:
    """Random uint8 images (every crop and flip of one differs) labelled with their row."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "train.npz",
        images=rng.integers(0, 256, (count, *shape), dtype=np.uint8),
        labels=np.arange(count),
    )
    test = rng.integers(0, 256, (4, *shape), dtype=np.uint8)
    np.savez(folder / "test.npz", images=test, labels=np.arange(4) * 10)
    return folder


def batches(loader: DataLoader | DeviceBatches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images, labels) for images, labels in loader]


def assert_same_batches(first: list, second: list) -> None:
    assert len(first) == len(second)
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second, strict=True):
        assert images_a.dtype == images_b.dtype == torch.float32
        assert labels_a.dtype == labels_b.dtype == torch.int64
        assert images_a.is_contiguous() and images_b.is_contiguous()
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


def both_paths(make: type[ImageDataModule], seed: int = 7, **options) -> tuple:
    """The per-image and the on-device training loaders of two datamodules built alike,
    each under the same global seed (the seed of the order)."""
    loaders = []
    for on_device in (False, True):
        torch.manual_seed(seed)
        datamodule = make(on_device=on_device, **options)
        datamodule.setup("fit")
        loaders.append(datamodule.train_dataloader())
    return tuple(loaders)


@pytest.fixture
def lightning_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Lightning's ``rank_zero_info`` lines (its logger does not propagate to the root)."""
    logger = logging.getLogger("pytorch_lightning")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


# -- the same batches as the per-image path -----------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"image_size": 12},  # resized up front, as the per-image transform resizes
        {"image_size": 5},
        {"classes": list(range(44, 0, -3)), "val_fraction": 0.2},  # through the relabelling
        {"train_subset": 17, "batch_size": 5},
    ],
    ids=["native", "upsized", "downsized", "classes", "subset"],
)
def test_arrays_batches_are_the_per_image_batches_without_augmentation(
    tmp_path: Path, options: dict
) -> None:
    folder = write_arrays(tmp_path)
    options = {"batch_size": 8, **options}
    per_image, on_device = both_paths(ArraysDataModule, path=folder, **options)
    assert isinstance(per_image, DataLoader) and isinstance(on_device, DeviceBatches)
    assert len(on_device) == len(per_image)
    # the per-image dataset, for code that reads loader.dataset[index]
    assert torch.equal(on_device.dataset[4][0], per_image.dataset[4][0])
    for epoch in (0, 3):  # every epoch, from seed + epoch
        per_image.sampler.set_epoch(epoch)
        on_device.set_epoch(epoch)
        assert on_device.indices() == list(per_image.sampler)
        assert_same_batches(batches(per_image), batches(on_device))


def test_grayscale_arrays_and_synthetic_images_give_the_per_image_batches(
    tmp_path: Path,
) -> None:
    gray = write_arrays(tmp_path / "gray", shape=(8, 6))
    assert_same_batches(*map(batches, both_paths(ArraysDataModule, path=gray, batch_size=8)))
    per_image, on_device = both_paths(SyntheticDataModule, num_train=40, batch_size=16)
    assert on_device.images.dtype == torch.float32  # generated floats stay floats
    assert_same_batches(batches(per_image), batches(on_device))


@pytest.mark.parametrize(
    ("module", "dataset_class", "data"),
    [
        (CIFAR10DataModule, torchvision.datasets.CIFAR10, (5, 32, 32, 3)),
        (CIFAR10DataModule, torchvision.datasets.CIFAR100, (5, 32, 32, 3)),
        (STL10DataModule, torchvision.datasets.STL10, (5, 3, 96, 96)),
    ],
)
def test_torchvision_sets_give_the_pixels_of_their_images(
    module: type[ImageDataModule], dataset_class: type, data: tuple[int, ...]
) -> None:
    """The tensor the on-device path keeps holds what torchvision's PIL images hold."""
    dataset = dataset_class.__new__(dataset_class)  # the in-memory state of a loaded set
    dataset.data = np.random.default_rng(0).integers(0, 256, data, dtype=np.uint8)
    dataset.targets = dataset.labels = list(range(5))
    dataset.transform = dataset.target_transform = None
    pixels = module(root="unused")._pixels(dataset)
    expected = torch.stack([v2.functional.to_image(dataset[i][0]) for i in range(5)])
    assert pixels.dtype == torch.uint8 and torch.equal(pixels, expected)


# -- flips and crops ----------------------------------------------------------------------


def identify(original: torch.Tensor, augmented: torch.Tensor, padding: int) -> tuple:
    """The (top, left, flipped) at which torchvision's reflect-padded crop, then flip, of
    ``original`` (uint8 CHW) gives ``augmented`` (float CHW); fails when none does."""
    _, height, width = original.shape
    padded = v2.functional.pad(original, [padding], padding_mode="reflect")
    found = [
        (top, left, flip)
        for top in range(2 * padding + 1)
        for left in range(2 * padding + 1)
        for flip in (False, True)
        if torch.equal(
            augmented,
            v2.functional.to_dtype(
                v2.functional.crop(padded, top, left, height, width).flip(-1)
                if flip
                else v2.functional.crop(padded, top, left, height, width),
                torch.float32,
                scale=True,
            ),
        )
    ]
    assert len(found) == 1, f"not a flip and crop of the original: {found}"
    return found[0]


def test_flips_and_crops_are_valid_and_drawn_like_the_per_image_ones(tmp_path: Path) -> None:
    folder = write_arrays(tmp_path, count=40, shape=(16, 16, 3))
    originals = torch.from_numpy(np.load(folder / "train.npz")["images"]).permute(0, 3, 1, 2)
    loaders = both_paths(
        ArraysDataModule,
        path=folder,
        batch_size=16,
        val_fraction=0.1,
        random_crop=True,
        horizontal_flip=True,
    )
    padding = 2  # an eighth of 16
    for loader in loaders:
        draws = []
        for epoch in range(14):  # 36 images an epoch: 504 draws
            loader.sampler.set_epoch(epoch)
            for images, labels in loader:
                draws += [
                    identify(originals[i], x, padding) for x, i in zip(images, labels, strict=True)
                ]
        tops, lefts, flips = (np.array(values) for values in zip(*draws, strict=True))
        assert abs(flips.mean() - 0.5) < 0.1  # 504 fair coins: sd 0.022
        for offsets in (tops, lefts):  # uniform over 0 .. 4: about 101 each, sd 9
            counts = np.bincount(offsets, minlength=2 * padding + 1)
            assert len(counts) == 5 and counts.min() > 60 and counts.max() < 145, counts


def test_crop_and_flip_is_torchvisions_reflect_pad_crop_and_flip() -> None:
    images = torch.rand(3, 3, 7, 5)
    for top in range(5):
        for left in range(5):
            for flip in (False, True):
                expected = v2.functional.crop(
                    v2.functional.pad(images[[2, 0]], [2], padding_mode="reflect"), top, left, 7, 5
                )
                picked = crop_and_flip(
                    images,
                    torch.tensor([2, 0]),
                    torch.tensor([[top, left]] * 2),
                    torch.tensor([flip] * 2),
                    padding=2,
                )
                assert torch.equal(picked, expected.flip(-1) if flip else expected)


# -- resume -------------------------------------------------------------------------------


def augmented_loader(folder: Path, seed: int = 3) -> DeviceBatches:
    torch.manual_seed(seed)
    datamodule = ArraysDataModule(
        folder, batch_size=8, random_crop=True, horizontal_flip=True, on_device=True
    )
    return datamodule.train_dataloader()


def test_an_epoch_is_the_same_from_a_fresh_loader_set_to_it(tmp_path: Path) -> None:
    """What a run resumed at epoch k sees: a new loader, ``set_epoch(k)``, then iteration."""
    folder = write_arrays(tmp_path)
    running = augmented_loader(folder)
    epochs = []
    for epoch in range(4):
        running.set_epoch(epoch)
        epochs.append(batches(running))
    resumed = augmented_loader(folder)
    resumed.set_epoch(2)
    assert_same_batches(batches(resumed), epochs[2])
    assert_same_batches(batches(resumed), epochs[2])  # iterating again repeats the epoch
    flat = [torch.cat([images for images, _ in epoch]) for epoch in epochs]
    assert not torch.equal(flat[1], flat[2])  # another order and other flips and crops
    other_seed = augmented_loader(folder, seed=4)
    other_seed.set_epoch(2)
    assert not torch.equal(torch.cat([x for x, _ in other_seed]), flat[2])


# -- DDP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("augmented", [False, True])
def test_each_rank_gets_the_shard_lightning_gives_the_per_image_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, augmented: bool
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")  # what seed_everything leaves for the wrapper
    folder = write_arrays(tmp_path)  # 41 training images: 21 per rank, one of them twice
    options = {"random_crop": augmented, "horizontal_flip": augmented}
    torch.manual_seed(7)
    per_image = ArraysDataModule(folder, batch_size=6, on_device=False, **options)
    per_image = per_image.train_dataloader()
    torch.manual_seed(7)
    datamodule = ArraysDataModule(folder, batch_size=6, **options)
    for epoch in (0, 5):
        shards = []
        for rank in (0, 1):
            # what the trainer does with the per-image training loader under DDP
            sampler = _get_distributed_sampler(
                per_image, shuffle=True, overfit_batches=0, num_replicas=2, rank=rank
            )
            lightning = _update_dataloader(per_image, sampler, mode=RunningStage.TRAINING)
            on_device = datamodule.device_batches(CPU, shard=(2, rank))
            for loader in (lightning, on_device):
                _set_sampler_epoch(loader, epoch)  # how Lightning starts every epoch
            assert on_device.indices() == list(lightning.sampler)
            assert len(on_device) == len(lightning) == 4
            by_lightning, by_device = batches(lightning), batches(on_device)
            for (_, labels_a), (_, labels_b) in zip(by_lightning, by_device, strict=True):
                assert torch.equal(labels_a, labels_b)  # labels are rows: the same images
            if not augmented:
                assert_same_batches(by_lightning, by_device)
            shards.append(on_device.indices())
        assert set(shards[0]) | set(shards[1]) == set(range(41))


def test_the_shard_follows_the_trainers_strategy_and_use_distributed_sampler() -> None:
    quiet = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False}
    assert lightning_shard(None) is None
    assert lightning_shard(pl.Trainer(devices=1, **quiet)) is None
    assert lightning_shard(pl.Trainer(strategy="ddp", devices=2, **quiet)) == (2, 0)
    unsharded = pl.Trainer(strategy="ddp", devices=2, use_distributed_sampler=False, **quiet)
    assert lightning_shard(unsharded) is None


# -- when it is on, and why not -------------------------------------------------------------


def test_auto_loads_per_image_where_it_must_and_says_why(
    tmp_path: Path, lightning_log: pytest.LogCaptureFixture
) -> None:
    from PIL import Image

    for index in range(6):
        Image.new("RGB", (4, 4), (index * 40, 0, 0)).save(tmp_path / f"{index}.png")
    folder = FolderDataModule(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert folder.on_device == "auto"
    assert isinstance(folder.train_dataloader(), DataLoader)
    assert "training batches loaded per image: FolderDataModule does not hold" in lightning_log.text
    with pytest.raises(ConfigError, match=r"data\.on_device=true needs .* data=folder"):
        FolderDataModule(tmp_path, on_device=True)


def test_overfit_batches_needs_the_per_image_loader(
    tmp_path: Path, lightning_log: pytest.LogCaptureFixture
) -> None:
    folder = write_arrays(tmp_path)
    trainer = pl.Trainer(accelerator="cpu", overfit_batches=1, logger=False)
    auto = ArraysDataModule(folder)
    auto.trainer = trainer
    assert isinstance(auto.train_dataloader(), DataLoader)
    assert "trainer.overfit_batches" in lightning_log.text
    forced = ArraysDataModule(folder, on_device=True)
    forced.trainer = trainer
    with pytest.raises(ConfigError, match=r"data\.on_device=true: trainer\.overfit_batches"):
        forced.train_dataloader()


def test_auto_takes_a_gpu_only_where_the_images_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datamodule = ArraysDataModule(write_arrays(tmp_path, shape=(64, 64, 3)))  # 40 x 12 KiB
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * 2**20, 8 * 2**30))
    assert datamodule._on_device_problem(gpu, None) is None  # 0.47 MiB of 2 MiB free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**20, 8 * 2**30))
    problem = datamodule._on_device_problem(gpu, None)
    assert "(0.5 MiB) take more than 25% of the free memory of cuda:0 (1 MiB)" in problem
    assert "data.on_device=true forces it" in problem


def test_on_device_rejects_other_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.on_device must be true, false or auto"):
        ArraysDataModule(tmp_path, on_device="yes")


# -- real fits ----------------------------------------------------------------------------


class LoaderProbe(pl.Callback):
    """Records the training loader's type and every training batch's device and sum."""

    records: list[dict] = []

    def __init__(self) -> None:
        self.record: dict = {"batches": []}
        LoaderProbe.records.append(self.record)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        self.record["loader"] = type(trainer.train_dataloader).__name__
        images, _ = batch
        self.record["batches"].append((str(images.device), float(images.double().sum())))


def fit(compose_cfg, folder: Path, *overrides: str) -> tuple[dict, dict]:
    cfg = compose_cfg(
        "encoder.weights=null",
        "layout=depth2",
        "callbacks=default",
        "finetune=full",
        "logger=csv",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.save_top_k=0",
        f"+callbacks.loader_probe._target_={__name__}.LoaderProbe",
        *overrides,
        output_dir=folder,
    )
    summary, _ = train(cfg)
    return summary, LoaderProbe.records[-1]


def test_a_fit_on_arrays_drawn_on_the_device_equals_the_per_image_fit(
    compose_cfg, tmp_path: Path
) -> None:
    arrays = write_arrays(tmp_path / "arrays", count=40, shape=(32, 32, 3))
    data = (
        "data=arrays",
        f"data.path={arrays}",
        "data.batch_size=16",
        "data.num_workers=0",
        "data.horizontal_flip=false",
    )
    results = {
        on_device: fit(compose_cfg, tmp_path / str(on_device), *data, f"data.on_device={on_device}")
        for on_device in ("true", "false")
    }
    (device_summary, device_probe), (image_summary, image_probe) = results.values()
    assert (device_probe["loader"], image_probe["loader"]) == ("DeviceBatches", "DataLoader")
    assert len(device_probe["batches"]) == 6  # 36 training images, 3 batches, 2 epochs
    assert device_probe["batches"] == image_probe["batches"]
    for key in ("test/mse", "test/psnr", "test/ssim"):
        assert device_summary[key] == image_summary[key], key


def test_a_fit_on_synthetic_data_flipped_and_cropped_on_the_device_trains_and_logs(
    compose_cfg, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    summary, probe = fit(
        compose_cfg,
        out,
        "data=synthetic",
        "data.num_train=32",
        "data.num_val=16",
        "data.num_test=16",
        "data.batch_size=16",
        "data.random_crop=true",
        "data.horizontal_flip=true",
        "data.on_device=true",
    )
    assert probe["loader"] == "DeviceBatches" and len(probe["batches"]) == 4
    assert {device for device, _ in probe["batches"]} == {"cpu"}
    assert 5 < summary["test/psnr"] < 60
    assert json.loads((out / "metrics.json").read_text())["test/psnr"] == summary["test/psnr"]
    logged = (out / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/loss" in logged[0] and len(logged) > 4


class RankBatches(pl.Callback):
    """Writes ``rank{R}.json``: the loader's type and each epoch's training labels."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.record: dict = {"epochs": {}}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        self.record["loader"] = type(trainer.train_dataloader).__name__
        epoch = self.record["epochs"].setdefault(str(trainer.current_epoch), [])
        epoch += batch[1].tolist()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


@pytest.mark.slow
def test_two_ddp_processes_each_train_on_the_shard_the_per_image_path_gives_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = write_arrays(tmp_path / "arrays", count=40, shape=(32, 32, 3))
    probe = tmp_path / "probe"
    data = {"batch_size": 8, "horizontal_flip": True}
    result = run_script(
        "train.py",
        "data=arrays",
        f"data.path={arrays}",
        "data.num_workers=0",
        *(f"data.{key}={str(value).lower()}" for key, value in data.items()),
        "data.on_device=true",
        "encoder.weights=null",
        "layout=depth2",
        "callbacks=default",
        "finetune=full",
        "logger=csv",
        "seed=42",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        *DDP_ON_CPU,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"+callbacks.rank_batches._target_={__name__}.RankBatches",
        f"+callbacks.rank_batches.folder={probe}",
        env=DDP_ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # what each rank's per-image loader would have given: seed_everything(42) seeds both
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    torch.manual_seed(42)
    per_image = ArraysDataModule(arrays, on_device=False, **data).train_dataloader()
    for rank in (0, 1):
        record = json.loads((probe / f"rank{rank}.json").read_text())
        assert record["loader"] == "DeviceBatches"
        sampler = _get_distributed_sampler(
            per_image, shuffle=True, overfit_batches=0, num_replicas=2, rank=rank
        )
        lightning = _update_dataloader(per_image, sampler, mode=RunningStage.TRAINING)
        for epoch in (0, 1):
            _set_sampler_epoch(lightning, epoch)
            expected = torch.cat([labels for _, labels in lightning]).tolist()
            assert len(expected) == 18  # half of the 36 training images
            assert record["epochs"][str(epoch)] == expected
