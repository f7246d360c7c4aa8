"""A resumed run keeps its records: the epochs before the resume stay in metrics.csv, and
metrics.json counts the whole run (epochs, wall time) and names the machine."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from autoencoder.checkpointing import read_checkpoint
from autoencoder.examples import smoke_overrides
from autoencoder.loggers import machine_description
from autoencoder.param_groups import schedule_multiplier
from autoencoder.train import train


def val_epochs(run_dir: Path) -> list[int]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file) if row.get("val/psnr")]


def test_a_resumed_run_appends_to_its_metrics_csv(compose_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = (*smoke_overrides(32, 16, 16), "logger=csv", "finetune=full")
    first, _ = train(compose_cfg(*overrides, "trainer.max_epochs=1", output_dir=run_dir))
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


def test_a_resume_can_anneal_a_constant_run_in_bf16(compose_cfg, tmp_path: Path) -> None:
    """A constant-rate run resumed with ``model.scheduler=cosine`` (and bf16-mixed, as the
    full-data runs of docs/results.md were) decays from the resumed step to 0 at the new
    last epoch: the schedule comes from the config, not from the checkpoint."""
    run_dir = tmp_path / "run"
    overrides = (*smoke_overrides(32, 16, 16), "logger=csv", "finetune=full")
    overrides += ("trainer.log_every_n_steps=1", "callbacks=ema")
    train(compose_cfg(*overrides, "trainer.max_epochs=1", output_dir=run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = compose_cfg(
        *overrides,
        "trainer.max_epochs=4",
        "model.scheduler=cosine",
        "trainer.precision=bf16-mixed",
        f"ckpt_path={last}",
        output_dir=run_dir,
    )
    train(resumed)
    assert val_epochs(run_dir) == [0, 1, 2, 3]
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        rates = {
            int(row["step"]): float(row["lr-AdamW/decoder"])
            for row in csv.DictReader(file)
            if row.get("lr-AdamW/decoder")
        }
    peak, total = resumed.model.lr, 4 * 2  # 2 steps per epoch
    assert [rates[step] for step in (0, 1)] == [peak, peak]  # the constant first epoch
    for step in range(2, total):
        assert rates[step] == pytest.approx(peak * schedule_multiplier("cosine", step, total))
    assert rates[total - 1] < 0.1 * peak
    state = read_checkpoint(last)["state_dict"]  # bf16-mixed keeps fp32 weights
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
