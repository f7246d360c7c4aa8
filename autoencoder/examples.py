"""A run folder to explore in the notebooks: the user's, or a tiny one trained on the spot.

from autoencoder.examples import open_run
run_dir, metrics, ckpt = open_run()  # $AUTOENCODER_RUN_DIR, or a tiny synthetic run
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from autoencoder.config import compose_config
from autoencoder.train import train

# experiment=smoke shortened to two epochs: one frozen, one fine-tuned, csv logs.
TINY_RUN = (
    "experiment=smoke",
    "data.num_train=64",
    "data.num_val=32",
    "data.num_test=32",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "finetune.patience=null",
    "finetune.max_frozen_epochs=1",
)


def train_tiny_run(folder: Path) -> Path:
    """Train :data:`TINY_RUN` into ``folder`` (about a minute on 2 CPU cores) and save its
    config where ``scripts/train.py`` does, so evaluate and encode can rebuild its model."""
    cfg = compose_config("train", *TINY_RUN)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
    train(cfg)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
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
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpt = Path(metrics["best_ckpt"] or run_dir / "checkpoints" / "last.ckpt")
    return run_dir, metrics, ckpt
