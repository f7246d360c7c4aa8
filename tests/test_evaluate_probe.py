"""The linear probe in an evaluation: ``test/probe_acc`` in metrics.json, recomputed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoencoder.data import ArraysDataModule
from autoencoder.probe import linear_probe
from autoencoder.runs import load_autoencoder, load_run_config
from tests.conftest import ARRAYS_ONE_BATCH, make_images, run_script, write_arrays


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_arrays(tmp_path_factory.mktemp("probe") / "arrays")


@pytest.fixture(scope="module")
def trained(arrays: Path) -> Path:
    run_dir = arrays.parent / "run"
    result = run_script(
        "train.py",
        *ARRAYS_ONE_BATCH,
        f"data.path={arrays}",
        "data.train_subset=40",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return Path(json.loads((run_dir / "metrics.json").read_text())["best_ckpt"])


def evaluate(ckpt: Path, out: Path, *overrides: str) -> dict:
    result = run_script("evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={out}", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


def test_the_probe_is_fitted_on_the_whole_training_split_and_scored_on_test(
    trained: Path, arrays: Path, tmp_path: Path
) -> None:
    metrics = evaluate(trained, tmp_path / "eval", "probe_train_images=50")
    # 96 images, 10 held out for validation, 50 of the other 86 (not the run's subset of 40)
    assert metrics["probe_train_images"] == 50

    model = load_autoencoder(trained, load_run_config(trained))
    data = ArraysDataModule(arrays, num_workers=0)
    data.setup()
    keep = sorted(torch.randperm(86, generator=torch.Generator().manual_seed(0))[:50].tolist())

    def latents(dataset, indices):
        images = torch.stack([dataset[i][0] for i in indices])
        labels = torch.tensor([dataset[i][1] for i in indices])
        with torch.no_grad():
            return model.encode(images).flatten(1), labels

    expected = linear_probe(
        *latents(data.train_set, keep), *latents(data.test_set, range(len(data.test_set)))
    )
    assert metrics["test/probe_acc"] == pytest.approx(expected.accuracy, abs=1e-6)
    assert metrics["probe_weight_decay"] == expected.weight_decay


def test_no_probe_when_switched_off_or_without_labels(trained: Path, tmp_path: Path) -> None:
    assert "test/probe_acc" not in evaluate(trained, tmp_path / "off", "probe=false")
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for split, count in (("train", 40), ("test", 16)):
        np.savez(unlabelled / f"{split}.npz", images=make_images(count, seed=3))
    metrics = evaluate(
        trained, tmp_path / "none", "data=arrays", f"data.path={unlabelled}", "data.num_workers=0"
    )
    assert "test/probe_acc" not in metrics and np.isfinite(metrics["test/psnr"])
