"""W&B logging, offline: what a run records, reconstruction grids, multirun groups."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import wandb
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn
from wandb.proto.wandb_internal_pb2 import Record

from autoencoder.callbacks import reconstruct
from autoencoder.config import instantiate
from autoencoder.examples import smoke_overrides
from autoencoder.grids import comparison_grid
from autoencoder.loggers import multirun_group_and_name
from autoencoder.train import train
from tests.conftest import compose_job, run_script

SMALL = (*smoke_overrides(32, 16, 16), "trainer.max_epochs=2", "trainer.log_every_n_steps=1")


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline W&B whose settings, caches and staging folders all live in ``tmp_path``."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


@pytest.fixture
def hydra_job() -> Iterator[Callable[..., None]]:
    """Make ``HydraConfig`` describe a job launched with the given overrides, as in an app."""

    def _start(*overrides: str) -> None:
        HydraConfig.instance().set_config(compose_job("train", *overrides, hydra=True))

    yield _start
    HydraConfig.instance().cfg = None


# ------------------------------------------------------------------ reading offline runs
def read_records(run_dir: Path) -> list[Record]:
    """The records of an offline run's ``run-*.wandb`` file.

    wandb 0.31 no longer ships a Python reader (``wandb.sdk.internal.datastore`` is gone), so
    this reads the format directly: a 7-byte header (``:W&B``, magic 0xBEE1, version), then
    LevelDB-log blocks of 32 KiB whose chunks have a 7-byte header (CRC-32 of type byte and
    data, length, type: 1 full, 2 first, 3 middle, 4 last) and carry protobuf ``Record``s.
    """
    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, "corrupt chunk"
        pending += chunk
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def of_type(records: list[Record], kind: str) -> list[Any]:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def run_config(records: list[Record]) -> dict[str, Any]:
    return {
        update.key: json.loads(update.value_json)
        for config in of_type(records, "config")
        for update in config.update
    }


def history(records: list[Record]) -> list[dict[str, Any]]:
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in row.item}
        for row in of_type(records, "history")
    ]


def image_rows(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [row for row in rows if row.get(f"{key}/_type") == "images/separated"]


def offline_runs(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "wandb").glob("offline-run-*"))


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def grid_images(grid: np.ndarray, count: int, reconstructions: bool) -> np.ndarray:
    """The originals (or reconstructions) of a grid of ``count`` 32 px images, as uint8
    N x 3 x 32 x 32, read back through the grid's layout."""
    empty = torch.zeros(count, 3, 32, 32)
    _, layout = comparison_grid(empty, empty)
    assert grid.shape == (layout.size[1], layout.size[0], 3)
    tiles = []
    for index in range(count):
        left, top = layout.box(index, reconstructions)
        block = grid[top : top + layout.tile_height, left : left + layout.tile_width]
        tiles.append(block[:: layout.scale, :: layout.scale].transpose(2, 0, 1))
    return np.stack(tiles)


def first_val_images(cfg: DictConfig, count: int) -> np.ndarray:
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images = torch.stack([datamodule.val_set[i][0] for i in range(count)])
    return images.mul(255).round().to(torch.uint8).numpy()


# -------------------------------------------------------------------------------- tests
def test_offline_run_records_config_metrics_rates_and_reconstructions(
    compose_cfg, hydra_job, tmp_path
) -> None:
    out = tmp_path / "run"
    hydra_job(*SMALL, "logger=wandb")
    cfg = compose_cfg(*SMALL, "logger=wandb", output_dir=out)
    train(cfg)
    wandb.teardown()  # finish() may return before W&B's service has written the last records

    (run_dir,) = offline_runs(out)
    records = read_records(run_dir)
    (run,) = of_type(records, "run")
    assert run.job_type == "train"
    assert [exit.exit_code for exit in of_type(records, "exit")] == [0]

    config = run_config(records)
    assert "${" not in json.dumps(config)
    assert config["trainer"]["default_root_dir"] == str(out)  # was ${paths.output_dir}
    assert config["overrides"] == [*SMALL, "logger=wandb"]
    assert config["latent_floats"] == 256 and config["compression_ratio"] == 12.0
    groups = ("decoder", "encoder.stem", "encoder.layer1", "encoder.layer2")
    assert all(config[f"params/{group}"] > 0 for group in groups)

    rows = history(records)
    logged = set().union(*rows)
    for stage in ("train", "val", "test"):
        assert {f"{stage}/{m}" for m in ("mse", "mae", "psnr", "ssim")} <= logged
    (tested,) = [row for row in rows if "test/psnr" in row]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test/loss", "test/mse", "test/mae", "test/psnr", "test/ssim"):
        assert tested[key] == pytest.approx(metrics[key], rel=1e-6), key
    assert {"train/loss_step", "val/loss", "test/loss", "finetune/phase"} <= logged
    assert {f"lr-AdamW/{group}" for group in groups} <= logged

    # one grid per validation epoch (none for the sanity check), one after testing
    validations = [row for row in rows if "val/psnr" in row]
    val_images, test_images = (image_rows(rows, f"{s}/reconstructions") for s in ("val", "test"))
    assert len(val_images) == len(validations) == 2 and len(test_images) == 1
    files = [
        run_dir / "files" / row[f"{key}/filenames"][0]
        for key, rows_ in (
            ("val/reconstructions", val_images),
            ("test/reconstructions", test_images),
        )
        for row in rows_
    ]
    assert all(path.is_file() for path in files)
    assert set(files) == set((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert (
        "each row of images above its reconstructions"
        in val_images[0]["val/reconstructions/captions"][0]
    )

    first, second, test = (pixels(path) for path in files)
    # the same validation images every time, the first 16 of the validation set ...
    originals = grid_images(first, 16, reconstructions=False)
    np.testing.assert_array_equal(originals, first_val_images(cfg, 16))
    np.testing.assert_array_equal(grid_images(second, 16, reconstructions=False), originals)
    # ... with reconstructions that changed as the model trained
    assert not np.array_equal(
        grid_images(first, 16, reconstructions=True), grid_images(second, 16, reconstructions=True)
    )
    assert not np.array_equal(grid_images(test, 16, reconstructions=False), originals)


def test_a_resumed_job_continues_the_w_and_b_run_of_its_checkpoint(compose_cfg, tmp_path) -> None:
    first_dir, resumed_dir = tmp_path / "first", tmp_path / "resumed"
    quick = (*SMALL, "logger=wandb", "test=false", "+logger.wandb.notes=first try")
    train(compose_cfg(*quick, output_dir=first_dir))
    last = first_dir / "checkpoints" / "last.ckpt"
    train(compose_cfg(*quick, "trainer.max_epochs=3", f"ckpt_path={last}", output_dir=resumed_dir))
    fresh_dir = tmp_path / "fresh"
    train(compose_cfg(*quick, "trainer.max_epochs=1", output_dir=fresh_dir))
    wandb.teardown()

    runs = {
        folder.name: of_type(read_records(run), "run")[0]
        for folder in (first_dir, resumed_dir, fresh_dir)
        for run in offline_runs(folder)
    }
    run_id = (first_dir / "wandb_run_id.txt").read_text().strip()
    assert runs["first"].run_id == runs["resumed"].run_id == run_id
    assert (resumed_dir / "wandb_run_id.txt").read_text().strip() == run_id
    assert runs["fresh"].run_id != run_id  # a job without ckpt_path starts its own run
    assert runs["first"].notes == "first try"  # extra arguments reach wandb.init


def test_csv_logger_writes_png_grids(compose_cfg, tmp_path) -> None:
    out = tmp_path / "csv-run"
    cfg = compose_cfg(
        *SMALL,
        "logger=csv",
        "callbacks.reconstructions.num_images=4",
        output_dir=out,
    )
    train(cfg)
    grids = out / "reconstructions"
    assert sorted(p.name for p in grids.iterdir()) == [
        "test.png",
        "val_epoch000.png",
        "val_epoch001.png",
    ]
    first, second = pixels(grids / "val_epoch000.png"), pixels(grids / "val_epoch001.png")
    originals = grid_images(first, 4, reconstructions=False)
    np.testing.assert_array_equal(originals, first_val_images(cfg, 4))
    np.testing.assert_array_equal(grid_images(second, 4, reconstructions=False), originals)
    assert not (out / "wandb").exists()


def test_reconstruct_restores_every_submodule_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Dropout(0.5), nn.Sigmoid())
    model.train()
    model[1].eval()  # a frozen BatchNorm, as the fine-tuning callback leaves it
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    images = torch.rand(4, 3, 8, 8)

    first = reconstruct(trainer, model, images)
    second = reconstruct(trainer, model, images)

    torch.testing.assert_close(first, second)  # dropout was off
    assert not first.requires_grad and first.min() >= 0.0 and first.max() <= 1.0
    assert [m.training for m in model] == [True, False, True, True]


def test_multirun_jobs_share_the_sweep_as_group_and_get_job_names() -> None:
    hydra = OmegaConf.create(
        {
            "mode": RunMode.MULTIRUN,
            "sweep": {"dir": "outputs/train/multiruns/2026-01-02_03-04-05-000006"},
            "job": {"num": 1, "override_dirname": "finetune=full"},
        }
    )
    assert multirun_group_and_name(hydra, None, None) == (
        "2026-01-02_03-04-05-000006",
        "job1 finetune=full",
    )
    assert multirun_group_and_name(hydra, "mine", "named") == ("mine", "named")
    hydra.job.override_dirname = ""
    assert multirun_group_and_name(hydra, None, None)[1] == "job1"
    hydra.mode = RunMode.RUN
    assert multirun_group_and_name(hydra, None, None) == (None, None)
    assert multirun_group_and_name(None, "g", None) == ("g", None)


@pytest.mark.slow  # two jobs in a fresh interpreter: about 25 s on 2 busy CPU cores
def test_multirun_failed_job_closes_its_run_and_the_next_gets_its_own(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    # job 0 fails while it trains (its loss diverges), after its W&B run has started; a
    # value the checks can refuse would stop the sweep before any job (test_preflight.py)
    result = run_script(
        "train.py",
        "-m",
        *SMALL,
        "data.num_train=80",
        "test=false",
        "trainer.max_epochs=1",
        "logger=wandb",
        "model.lr=1e30,1e-3",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode != 0 and "non-finite training loss" in result.stderr
    runs = [read_records(run) for job in ("0", "1") for run in offline_runs(sweep / job)]
    assert len(runs) == 2
    (failed,), (passed,) = (of_type(records, "run") for records in runs)
    assert failed.run_group == passed.run_group == "sweep"
    assert failed.display_name.startswith("job0 ") and passed.display_name.startswith("job1 ")
    assert failed.run_id != passed.run_id
    assert [e.exit_code for e in of_type(runs[0], "exit")] == [1]
    assert [e.exit_code for e in of_type(runs[1], "exit")] == [0]
    assert not any("val/psnr" in row for row in history(runs[0]))
    assert any("val/psnr" in row for row in history(runs[1]))
    assert "model.lr=0.001" in run_config(runs[1])["overrides"]
