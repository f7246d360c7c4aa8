"""Shared fixtures and helpers: small generated data, Hydra composition, the scripts as a user
runs them, a trained run shared by the session; all offline.

Override lists (``ONE_BATCH``, ``FAST_PRETRAIN``; the tiny run's in
:mod:`autoencoder.examples`) are plain values rather than fixtures because parametrised
tables need them when the test module is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from autoencoder.config import compose_config, config_dir
from autoencoder.examples import TWO_PHASES
from autoencoder.pretrain import pretrain
from autoencoder.train import train

# The checkout under test and its configs.
ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = config_dir()
# One batch of train, val and test: a few seconds of real training on 2 CPU cores.
ONE_BATCH = (
    "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
)
# A from-scratch autoencoder on data=arrays for one batch (add data.path=DIR).
ARRAYS_ONE_BATCH = (
    "data=arrays",
    "data.batch_size=16",
    "data.num_workers=0",
    "encoder.weights=null",
    "finetune=full",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    *ONE_BATCH,
)
# Pretraining for one batch on 2 CPU cores: a ResNet-18 step takes about a second there.
FAST_PRETRAIN = (
    "trainer.max_epochs=1",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    *ONE_BATCH,
)
# Two DDP ranks in processes of their own on the CPU, as scripts/train.py starts them.
DDP_ON_CPU = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
DDP_ENV = {"PL_DISABLE_FORK": "1", "WANDB_MODE": "offline"}
# The labelled arrays of ``arrays_dir`` and of the session's trained run.
NUM_TRAIN, NUM_TEST, NUM_CLASSES = 96, 32, 10

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where torch sees a CUDA device (lightning-hydra-template's
    ``RunIf(min_gpus=1)``); elsewhere they are collected and skipped, with the reason."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU: torch.cuda.is_available() is false on this machine"
    )
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def compose_job(
    name: str, *overrides: str, output_dir: Path | None = None, hydra: bool = False
) -> DictConfig:
    """One of the configs in ``conf/`` (``train``, ``evaluate``, ``encode``, ``pretrain``)
    with overrides, its outputs in ``output_dir`` when given. ``hydra`` keeps the ``hydra``
    section, whose job folder is then ``output_dir`` too, so that everything resolves."""
    GlobalHydra.instance().clear()
    cfg = compose_config(name, *overrides, return_hydra_config=hydra)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            if hydra:
                cfg.hydra.runtime.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the training config with overrides, writing outputs under ``tmp_path``."""

    def _compose(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_job("train", *overrides, output_dir=output_dir or tmp_path / "run")

    return _compose


def run_script(
    script: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """``python scripts/<script> args...`` as a user runs it, with its output captured; the
    checkout is importable from any ``cwd``.

    The script runs in a process group of its own with ``faulthandler`` on, so that a hang
    fails with evidence: past ``timeout`` every process of the group (DDP ranks included)
    gets SIGABRT, which makes each Python process print the stack of every thread, and the
    test fails with the end of that output.
    """
    command = [sys.executable, str(ROOT / "scripts" / script), *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1", **(env or {})},
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = _abort_with_stacks(process)
        pytest.fail(
            f"{script} still ran after {timeout:.0f} s; the stacks of its processes "
            f"(SIGABRT with faulthandler), last lines:\n{stderr[-12000:]}\n"
            f"stdout, last lines:\n{stdout[-2000:]}",
            pytrace=False,
        )
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _abort_with_stacks(process: subprocess.Popen) -> tuple[str, str]:
    """SIGABRT to the process group, then SIGKILL to what is left; the output it wrote."""
    for signum, grace in ((signal.SIGABRT, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(process.pid, signum)
        try:
            return process.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    return process.communicate()


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


def write_arrays(folder: Path, labelled: bool = True) -> Path:
    """A folder in the ``data=arrays`` format: ``NUM_TRAIN`` and ``NUM_TEST`` images in
    train.npz and test.npz, labelled ``0 .. NUM_CLASSES - 1`` in turn unless ``labelled``
    is false."""
    folder.mkdir(parents=True)
    for split, count, seed in (("train", NUM_TRAIN, 0), ("test", NUM_TEST, 1)):
        labels = {"labels": np.arange(count, dtype=np.int64) % NUM_CLASSES} if labelled else {}
        np.savez(folder / f"{split}.npz", images=make_images(count, seed=seed), **labels)
    return folder


@pytest.fixture
def arrays_dir(tmp_path: Path) -> Path:
    """A folder of labelled arrays (see :func:`write_arrays`)."""
    return write_arrays(tmp_path / "arrays")


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run and the data and classifier it was made from."""

    arrays_dir: Path
    classifier_weights: Path
    run_dir: Path
    metrics: dict[str, Any]

    @property
    def ckpt(self) -> Path:
        return Path(self.metrics["best_ckpt"])


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A ResNet-18 classifier pretrained for one step on labelled arrays, then an autoencoder
    trained on that encoder for two epochs (one frozen, one fine-tuned), its config saved
    as a Hydra run saves it; trained once per session, for evaluate, encode and notebooks."""
    base = tmp_path_factory.mktemp("trained_run")
    arrays = write_arrays(base / "arrays")
    pretrained = pretrain(
        compose_job(
            "pretrain",
            "encoder=resnet18",
            "data=arrays",
            f"data.path={arrays}",
            "logger=none",
            *FAST_PRETRAIN,
            output_dir=base / "pretrain",
        )
    )
    run_dir = base / "run"
    cfg = compose_job(
        "train",
        "data=arrays",
        f"data.path={arrays}",
        "data.batch_size=32",
        "data.num_workers=0",
        f"encoder.weights={pretrained['weights_path']}",
        # the geometry the encoder was pretrained at (with the stem's max-pool), no average
        "layout=depth3",
        "callbacks=default",
        "logger=csv",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        *TWO_PHASES,
        output_dir=run_dir,
    )
    metrics, _ = train(cfg)
    # What a Hydra run saves: the composed config, its output folder left unresolved.
    with open_dict(cfg):
        cfg.paths.output_dir = "${hydra:runtime.output_dir}"
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    GlobalHydra.instance().clear()
    return TrainedRun(arrays, Path(pretrained["weights_path"]), run_dir, metrics)
