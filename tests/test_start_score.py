"""Do no harm: a run that starts from pretrained weights scores its start before the first
step and returns that start when no epoch beats it, through a resume too."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from autoencoder.checkpointing import read_checkpoint
from autoencoder.config import instantiate
from autoencoder.examples import smoke_overrides
from autoencoder.runs import build_model
from autoencoder.start_score import START_FILENAME
from autoencoder.train import train
from tests.conftest import compose_job

DATA = (*smoke_overrides(64, 32, 32), "trainer.deterministic=true")
# a finished run to start from: 6 epochs of 256 images (96 steps) from scratch
SOURCE = (
    *smoke_overrides(256, 32, 32),
    "trainer.deterministic=true",
    "finetune=full",
    "trainer.max_epochs=6",
    "model.lr=3e-3",
    "logger=none",
)
# a rate at which AdamW wrecks a trained model within a step
WRECKING = "model.lr=0.5"


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("source") / "run"
    return Path(train(compose_job("train", *SOURCE, output_dir=folder))[0]["best_ckpt"])


def start_rows(run_dir: Path) -> list[dict[str, str]]:
    """The csv log's rows of the start score: validation metrics without an epoch."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return [r for r in csv.DictReader(file) if r.get("val/psnr") and not r.get("epoch")]


def adapt(source: Path, run_dir: Path, *overrides: str) -> dict:
    cfg = compose_job(
        "train",
        *DATA,
        f"init_from={source}",
        "finetune=full",
        "logger=csv",
        *overrides,
        output_dir=run_dir,
    )
    return train(cfg)[0]


@torch.no_grad()
def mse_on(ckpt: Path, split: str) -> float:
    """The MSE of a checkpoint's weights on a split of the adaptation runs' data, computed
    directly."""
    cfg = compose_job("train", *DATA)
    model = build_model(cfg)
    model.load_state_dict(read_checkpoint(ckpt)["state_dict"])
    model.eval()
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = getattr(datamodule, f"{split}_set")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return float(torch.mean((model(images) - images) ** 2))


def test_the_start_is_scored_before_the_first_step_and_logged_first(source_ckpt, tmp_path) -> None:
    run_dir = tmp_path / "adapted"
    summary = adapt(source_ckpt, run_dir, "trainer.max_epochs=1", "model.lr=1e-4")
    start = summary["start"]
    assert set(start) >= {"val/loss", "val/mse", "val/psnr", "val/ssim"}
    assert start["val/mse"] == pytest.approx(mse_on(source_ckpt, "val"), rel=1e-4)
    rows = start_rows(run_dir)
    assert [row["step"] for row in rows] == ["0"]
    assert float(rows[0]["val/psnr"]) == pytest.approx(start["val/psnr"], rel=1e-5)


def test_a_run_that_only_gets_worse_returns_its_start(source_ckpt, tmp_path) -> None:
    run_dir = tmp_path / "wrecked"
    with pytest.warns(UserWarning, match="no epoch beat the model this run started from"):
        summary = adapt(source_ckpt, run_dir, "trainer.max_epochs=2", WRECKING)
    assert Path(summary["best_ckpt"]) == run_dir / "checkpoints" / START_FILENAME
    assert summary["best_epoch"] == 0
    assert summary["test/mse"] == pytest.approx(mse_on(source_ckpt, "test"), rel=1e-4)
    # the record describes the model it returns: the start's validation, the last epoch's
    # (worse) kept apart and labelled
    assert summary["val/psnr"] == pytest.approx(summary["start"]["val/psnr"], rel=1e-4)
    assert summary["last_epoch"]["epoch"] == 2
    assert summary["last_epoch"]["val/psnr"] < summary["val/psnr"] - 0.1
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["val/psnr"] == summary["val/psnr"]
    assert written["last_epoch"] == summary["last_epoch"]
    # the weights it was given, not the wrecked ones
    given, returned = (
        read_checkpoint(p)["state_dict"] for p in (source_ckpt, summary["best_ckpt"])
    )
    for key, value in given.items():
        assert torch.equal(returned[key], value), key


def test_the_record_of_a_returned_start_is_the_starts_with_a_weight_average_too(
    source_ckpt, tmp_path
) -> None:
    """The returned checkpoint is validated again without the fit's average swapped in:
    the start's own weights, not the wrecked run's average."""
    with pytest.warns(UserWarning, match="no epoch beat"):
        summary = adapt(
            source_ckpt, tmp_path / "ema", "trainer.max_epochs=2", WRECKING, "callbacks=ema"
        )
    assert summary["best_epoch"] == 0
    assert summary["val/psnr"] == pytest.approx(summary["start"]["val/psnr"], rel=1e-4)
    assert summary["last_epoch"]["val/psnr"] < summary["val/psnr"] - 0.1


def test_the_start_stays_the_one_to_beat_through_a_resume(source_ckpt, tmp_path) -> None:
    run_dir = tmp_path / "resumed"
    adapt(source_ckpt, run_dir, "trainer.max_epochs=1", WRECKING)
    last = run_dir / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match="no epoch beat"):
        summary = adapt(source_ckpt, run_dir, "trainer.max_epochs=2", WRECKING, f"ckpt_path={last}")
    assert summary["best_epoch"] == 0
    assert Path(summary["best_ckpt"]).name == START_FILENAME
    assert len(start_rows(run_dir)) == 1, "a resumed run does not score its start again"


def test_an_epoch_that_beats_the_start_replaces_it(source_ckpt, tmp_path) -> None:
    """A start whose decoder BatchNorm variances are 4x too large: an epoch at a
    tiny rate re-estimates them and beats it."""
    checkpoint = read_checkpoint(source_ckpt)
    for key, value in checkpoint["state_dict"].items():
        if key.startswith("decoder.") and key.endswith("running_var"):
            value.mul_(4.0)
    spoiled = tmp_path / "spoiled.ckpt"
    torch.save(checkpoint, spoiled)
    run_dir = tmp_path / "improved"
    more_steps = smoke_overrides(256, 32, 32)  # 16 steps per epoch
    summary = adapt(spoiled, run_dir, *more_steps, "trainer.max_epochs=2", "model.lr=1e-6")
    assert summary["best_epoch"] in (1, 2)
    assert summary["val/psnr"] > summary["start"]["val/psnr"] + 1.0
    assert ("last_epoch" in summary) == (summary["best_epoch"] == 1)
    assert not (run_dir / "checkpoints" / START_FILENAME).exists(), "the beaten start is removed"


def test_score_start_false_and_runs_from_scratch_score_nothing(tmp_path) -> None:
    scratch, _ = train(
        compose_job("train", *SOURCE, "trainer.max_epochs=1", output_dir=tmp_path / "a")
    )
    assert scratch["start"] is None
    assert not (tmp_path / "a" / "checkpoints" / START_FILENAME).exists()
    off = adapt(
        Path(scratch["best_ckpt"]), tmp_path / "b", "trainer.max_epochs=1", "score_start=false"
    )
    assert off["start"] is None and off["best_epoch"] == 1
