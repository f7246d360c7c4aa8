"""A run folder to explore in the notebooks: the user's, or a tiny one trained on the spot.

from autoencoder.examples import open_run
run_dir, metrics, ckpt = open_run()  # $AUTOENCODER_RUN_DIR, or a tiny synthetic run
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from autoencoder.config import compose_config
from autoencoder.run_folder import RunFolder
from autoencoder.train import train


def smoke_overrides(
    num_train: int = 64, num_val: int = 32, num_test: int = 32, batch_size: int = 16
) -> tuple[str, ...]:
    """Overrides for ``experiment=smoke`` (synthetic images, a random-init ResNet-18 cut
    after layer2, csv logs) at a chosen size, ``num_train / batch_size`` steps per epoch,
    without a progress bar."""
    return (
        "experiment=smoke",
        f"data.num_train={num_train}",
        f"data.num_val={num_val}",
        f"data.num_test={num_test}",
        f"data.batch_size={batch_size}",
        "trainer.enable_progress_bar=false",
    )


# Two epochs, one in each fine-tuning phase, with the rates logged at every step.
TWO_PHASES = (
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "finetune.patience=null",
    "finetune.max_frozen_epochs=1",
)
# The tiny run of the notebooks (and of the tests that need one).
TINY_RUN = (*smoke_overrides(), *TWO_PHASES)


def train_tiny_run(folder: Path) -> Path:
    """Train :data:`TINY_RUN` into ``folder`` (about a minute on 2 CPU cores) and save its
    config where ``scripts/train.py`` does, so evaluate and encode can rebuild its model."""
    cfg = compose_config("train", *TINY_RUN)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
    train(cfg)
    run = RunFolder(folder)
    run.config_file.parent.mkdir(parents=True)
    OmegaConf.save(cfg, run.config_file)
    return folder


def open_run(run_dir: str | Path | None = None) -> tuple[Path, dict[str, Any], Path]:
    """A training run's folder, its ``metrics.json`` and the checkpoint to load.

    The folder is ``run_dir``, else ``$AUTOENCODER_RUN_DIR`` (for example
    ``outputs/train/runs/<run>``), else a tiny run trained first in a temporary folder.
    """
    run_dir = run_dir or os.environ.get("AUTOENCODER_RUN_DIR")
    if run_dir is None:
        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
        run_dir = train_tiny_run(Path(tempfile.mkdtemp()) / "run")
    run = RunFolder(run_dir)
    metrics = run.metrics()
    if metrics is None:
        raise FileNotFoundError(f"{run.metrics_file}: the run has not finished (no metrics.json)")
    ckpt = Path(metrics.best_ckpt or run.last_checkpoint)
    return run.path, metrics.to_json(), ckpt
