"""Crashes cost minutes: a run killed with SIGKILL resumes from last.ckpt to the same result,
and a checkpoint is never left half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.demos.boring_classes import BoringModel

from autoencoder import checkpointing
from autoencoder.atomic import atomic_save
from autoencoder.checkpointing import AtomicCheckpointIO
from autoencoder.config import instantiate
from autoencoder.examples import smoke_overrides
from autoencoder.train import train
from tests.conftest import ROOT

# 48 images in batches of 16: 3 steps per epoch. Phase 2 starts after epoch 0 (step 3);
# last.ckpt is rewritten after every epoch, so after epoch 1 it holds step 6, in phase 2.
RUN = (
    *smoke_overrides(48, 16, 16),
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "finetune.patience=null",
    "finetune.max_frozen_epochs=1",
    "finetune.warmup_steps=4",
    "logger=csv",
    # test the final weights, which went through the kill and the resume
    "callbacks.model_checkpoint.save_top_k=0",
)
KILL_AT_STEP = 7  # the first step of epoch 2


class KillAtStep(Callback):
    """SIGKILL its own process once the trainer has completed ``step`` optimiser steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def train_script(log: Path, *overrides: str) -> subprocess.Popen:
    """Start ``scripts/train.py`` with ``overrides``, its output going to the file ``log``."""
    with log.open("w") as output:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def finetuning_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return next(v for k, v in checkpoint["callbacks"].items() if "TwoPhaseFinetuning" in k)


@pytest.mark.slow
def test_a_run_killed_in_phase_two_resumes_to_the_same_result(compose_cfg, tmp_path: Path) -> None:
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    killed = train_script(
        tmp_path / "killed.log",
        *RUN,
        f"hydra.run.dir={killed_dir}",
        f"+callbacks.kill._target_={__name__}.KillAtStep",
        f"+callbacks.kill.step={KILL_AT_STEP}",
    )
    # the uninterrupted run, in this process while the other one starts
    expected, _ = train(compose_cfg(*RUN, output_dir=reference_dir))
    assert killed.wait(timeout=240) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    assert not (killed_dir / "metrics.json").exists()
    last = killed_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)  # complete and loadable
    assert (saved["epoch"], saved["global_step"]) == (1, 6)
    assert finetuning_state(saved)["unfreeze_steps"]  # saved in phase 2

    log = tmp_path / "resumed.log"
    resumed = train_script(log, *RUN, f"hydra.run.dir={killed_dir}", f"ckpt_path={last}")
    assert resumed.wait(timeout=240) == 0, log.read_text()[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in log.read_text()

    got = json.loads((killed_dir / "metrics.json").read_text())
    assert got["transition_epoch"] == expected["transition_epoch"] == 0
    for key in ("val/psnr", "test/mse", "test/mae", "test/psnr", "test/ssim"):
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
    final, final_expected = (
        torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for folder in (killed_dir, reference_dir)
    )
    assert finetuning_state(final) == finetuning_state(final_expected)  # same phase, same steps
    for name, tensor in final_expected["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=1e-6, atol=1e-7)


def test_a_failed_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def fail_midway(file: Any) -> None:
        file.write(b"PK\x03\x04 half a zip archive")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_save(fail_midway, path)
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left

    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert io.load_checkpoint(path)["epoch"] == 2


def test_a_process_killed_while_saving_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    atomic_save(lambda file: torch.save({"epoch": 1}, file), path)
    writer = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from autoencoder.atomic import atomic_save

        def write_forever(file):
            file.write(b"x" * 1_000_000)
            file.flush()
            print("writing", flush=True)
            time.sleep(60)

        atomic_save(write_forever, Path({str(path)!r}))
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 1_000_000
    atomic_save(lambda file: torch.save({"epoch": 2}, file), path)  # removes the leftover
    assert sorted(tmp_path.iterdir()) == [path]
    assert torch.load(path, weights_only=True) == {"epoch": 2}


@pytest.mark.parametrize("trainer_option", ["default", "ddp"])
def test_every_trainer_config_writes_checkpoints_atomically(
    compose_cfg, trainer_option, tmp_path: Path, monkeypatch
) -> None:
    """The Trainer as conf/trainer builds it (DDP with one process, which needs no
    relaunch) fits and saves through AtomicCheckpointIO's atomic writes."""
    cfg = compose_cfg(f"trainer={trainer_option}", "trainer.accelerator=cpu", "trainer.devices=1")
    environment = dict(os.environ)
    trainer = instantiate(
        cfg.trainer, logger=False, enable_progress_bar=False, max_steps=2, max_epochs=None
    )
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    written: list[Path] = []

    def recording_save(write: Any, target: Path) -> None:
        written.append(target)
        atomic_save(write, target)

    monkeypatch.setattr(checkpointing, "atomic_save", recording_save)
    try:
        trainer.fit(BoringModel())
        trainer.save_checkpoint(tmp_path / "boring.ckpt")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)
    assert type(trainer.strategy).__name__ == (
        "DDPStrategy" if trainer_option == "ddp" else "SingleDeviceStrategy"
    )
    # the checkpoint the fit wrote by itself, then the one saved by hand: both atomically
    assert [path.suffix for path in written] == [".ckpt", ".ckpt"]
    assert written[-1] == tmp_path / "boring.ckpt"
    assert torch.load(tmp_path / "boring.ckpt", weights_only=True)["global_step"] > 0
