"""A resumed run keeps its CSV log: the epochs before the resume stay in metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from autoencoder.train import train
from tests.conftest import smoke


def val_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file) if row.get("val/psnr")]


def test_a_resumed_run_appends_to_its_metrics_csv(compose_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = (*smoke(32, 16, 16), "logger=csv", "finetune=full")
    train(compose_cfg(*overrides, "trainer.max_epochs=1", output_dir=run_dir))
    assert val_epochs(run_dir) == [0]
    last = run_dir / "checkpoints" / "last.ckpt"
    train(compose_cfg(*overrides, "trainer.max_epochs=3", f"ckpt_path={last}", output_dir=run_dir))
    assert val_epochs(run_dir) == [0, 1, 2]
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/psnr" in header and "train/loss_step" in header
