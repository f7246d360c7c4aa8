"""A resumed run keeps its records: the epochs before the resume stay in metrics.csv, and
metrics.json counts the whole run (epochs, wall time) and names the machine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from autoencoder.examples import smoke_overrides
from autoencoder.loggers import machine_description
from autoencoder.train import train


def val_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file) if row.get("val/psnr")]


def test_a_resumed_run_appends_to_its_metrics_csv(compose_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = (*smoke_overrides(32, 16, 16), "logger=csv", "finetune=full")
    first = train(compose_cfg(*overrides, "trainer.max_epochs=1", output_dir=run_dir))
    assert val_epochs(run_dir) == [0]
    last = run_dir / "checkpoints" / "last.ckpt"
    train(compose_cfg(*overrides, "trainer.max_epochs=3", f"ckpt_path={last}", output_dir=run_dir))
    assert val_epochs(run_dir) == [0, 1, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert first["epochs"] == 1 and metrics["epochs"] == 3
    # Lightning's Timer, restored from the checkpoint, adds the first part's time
    assert metrics["fit_seconds"] > first["fit_seconds"]
    assert metrics["machine"] == machine_description()
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/psnr" in header and "train/loss_step" in header
