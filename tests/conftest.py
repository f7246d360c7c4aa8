"""Shared fixtures and helpers: small generated data, Hydra composition, the scripts as a user
runs them; all offline.

Override builders (``smoke``, ``ONE_BATCH``) are plain values rather than fixtures because
parametrised tables need them when the test module is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "conf")
# One batch of train, val and test: a few seconds of real training on 2 CPU cores.
ONE_BATCH = (
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def smoke(
    num_train: int = 64, num_val: int = 32, num_test: int = 32, batch_size: int = 16
) -> tuple[str, ...]:
    """Overrides for the smoke experiment (synthetic images, a random-init ResNet-18 cut
    after layer2, both fine-tuning phases) at the size a test needs: ``num_train /
    batch_size`` steps per epoch."""
    return (
        "experiment=smoke",
        f"data.num_train={num_train}",
        f"data.num_val={num_val}",
        f"data.num_test={num_test}",
        f"data.batch_size={batch_size}",
        "trainer.enable_progress_bar=false",
    )


def run_script(
    script: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """``python scripts/<script> args...`` as a user runs it, with its output captured; the
    checkout is importable from any ``cwd``."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def make_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with a bright square: structure an autoencoder can learn."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, size)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for index in range(count):
        a, b, c = rng.uniform(0.2, 1.0, size=3)
        base = np.stack(
            [
                a * grid[None, :].repeat(size, 0),
                b * grid[:, None].repeat(size, 1),
                np.full((size, size), c * 0.5),
            ],
            axis=-1,
        )
        x, y = rng.integers(0, size - size // 4, size=2)
        base[y : y + size // 4, x : x + size // 4] = 1.0
        images[index] = (base * 255).astype(np.uint8)
    return images


@pytest.fixture
def arrays_dir(tmp_path: Path) -> Path:
    """A folder in the ``data=arrays`` format: train.npz and test.npz with labels."""
    folder = tmp_path / "arrays"
    folder.mkdir()
    for split, count, seed in (("train", 96, 0), ("test", 32, 1)):
        np.savez(
            folder / f"{split}.npz",
            images=make_images(count, seed=seed),
            labels=np.arange(count, dtype=np.int64) % 10,
        )
    return folder


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose the training config with overrides, writing outputs under ``tmp_path``."""
    GlobalHydra.instance().clear()

    def _compose(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir or tmp_path / "run")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
