"""The package outside a checkout: where its configs are found, and an installed,
non-editable copy that trains and benchmarks from a folder of its own."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import autoencoder.config
from autoencoder import cli
from autoencoder.config import config_dir
from autoencoder.errors import ConfigError
from tests.conftest import ROOT, make_images

# What a wheel is built from (pyproject.toml names the readme and the licence).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "autoencoder", "conf")


def test_a_checkout_uses_its_top_level_conf() -> None:
    assert config_dir() == ROOT / "conf"


def test_an_installed_copy_uses_the_conf_inside_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "autoencoder"
    (package / "conf").mkdir(parents=True)
    (package / "conf" / "train.yaml").write_text("task_name: train\n")
    (tmp_path / "site-packages" / "conf").mkdir()  # another distribution's: not ours
    monkeypatch.setattr(autoencoder.config, "PACKAGE_DIR", package)
    assert config_dir() == package / "conf"


def test_missing_configs_are_a_clear_error_naming_the_folder_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    installed = tmp_path / "site-packages" / "autoencoder"
    installed.mkdir(parents=True)
    monkeypatch.setattr(autoencoder.config, "PACKAGE_DIR", installed)
    with pytest.raises(ConfigError, match=r"pip install \.") as info:
        config_dir()
    assert f"no conf/ with train.yaml at {installed / 'conf'}" in str(info.value)

    checkout = tmp_path / "checkout"
    (checkout / "autoencoder").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    monkeypatch.setattr(autoencoder.config, "PACKAGE_DIR", checkout / "autoencoder")
    with pytest.raises(ConfigError, match=r"git checkout -- conf") as info:
        config_dir()
    assert f"at {checkout / 'conf'}" in str(info.value)

    # an entry point says so as a user error: one line, no traceback
    with pytest.raises(SystemExit) as exit_info:
        cli.hydra_main(lambda cfg: None, "train")()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: the project's configs are missing")


def run_outside(*command: str, cwd: Path, target: Path) -> subprocess.CompletedProcess:
    """``python command...`` from ``cwd`` with only the installed copy (``target``) on the
    path: the virtual environment provides the dependencies."""
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{command}:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow  # a wheel built and installed, a training run and a benchmark (~1.5 min)
def test_a_non_editable_install_trains_and_benchmarks_from_a_folder_of_its_own(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"  # a copy, so that building writes nothing into the checkout
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, ignore=skip)
        else:
            shutil.copy(ROOT / name, source / name)
    target = tmp_path / "installed"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run(
        [*pip, "--no-build-isolation", "--no-compile", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    installed = target / "autoencoder"
    modules = {p.relative_to(ROOT) for p in (ROOT / "autoencoder").rglob("*.py")}
    assert {p.relative_to(target) for p in installed.rglob("*.py")} == modules
    configs = {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
    assert {p.relative_to(installed / "conf") for p in (installed / "conf").rglob("*")} >= configs

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run_outside(
        "-c",
        "import autoencoder, autoencoder.config as c; print(autoencoder.__file__); "
        "print(c.config_dir())",
        cwd=elsewhere,
        target=target,
    )
    assert where.stdout.split() == [str(installed / "__init__.py"), str(installed / "conf")]

    run = elsewhere / "smoke"
    run_outside(
        *("-m", "autoencoder.train", "experiment=smoke", "trainer.max_epochs=1"),
        *("data.num_train=64", "data.num_val=32", "data.num_test=32"),
        *("trainer.enable_progress_bar=false", f"hydra.run.dir={run}"),
        cwd=elsewhere,
        target=target,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["test/psnr"] > 0

    arrays = elsewhere / "arrays"
    arrays.mkdir()
    for split, count, seed in (("train", 96, 0), ("test", 32, 1)):
        np.savez(arrays / f"{split}.npz", images=make_images(count, seed=seed))
    small = "encoder.weights=null layout=depth2 callbacks=default data.batch_size=16"
    run_outside(
        *("-m", "autoencoder.benchmarks", "--output", "bench", "--runs", "bench", "quality"),
        *("--data-dir", str(arrays), "--floats", "64", "--epochs", "1"),
        *("--config", f"small={small} data.num_workers=0 trainer.enable_progress_bar=false"),
        cwd=elsewhere,
        target=target,
    )
    rows = list(csv.DictReader((elsewhere / "bench" / "quality.csv").open()))
    assert (rows[0]["config"], rows[0]["floats"]) == ("small", "64")
    job = elsewhere / "bench" / "quality" / "small" / "64"
    assert json.loads((job / "metrics.json").read_text())["latent_floats"] == 64
    # the benchmark's training job composed the installed copy's configs
    assert str(installed / "conf") in (job / ".hydra" / "hydra.yaml").read_text()
