"""A class split as the transfer study uses it: an encoder pretrained on some classes, with
its geometry and class names recorded beside its weights; a classifier of other classes is
refused by evaluation in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoencoder.errors import ConfigError
from autoencoder.models.encoders import Encoder
from tests.conftest import ARRAYS_ONE_BATCH, ONE_BATCH, make_images, run_script

NAMES = [f"class{i}" for i in range(10)]


@pytest.fixture
def named_arrays(tmp_path: Path) -> Path:
    folder = tmp_path / "arrays"
    folder.mkdir()
    for split, count, seed in (("train", 120, 0), ("test", 40, 1)):
        np.savez(
            folder / f"{split}.npz",
            images=make_images(count, seed=seed),
            labels=np.arange(count) % 10,
            classes=np.array(NAMES),
        )
    return folder


def pretrain(arrays: Path, out: Path, *overrides: str) -> Path:
    result = run_script(
        "pretrain_encoder.py",
        "data=arrays",
        f"data.path={arrays}",
        "data.batch_size=16",
        "data.num_workers=0",
        "logger=none",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        *ONE_BATCH,
        f"hydra.run.dir={out}",
        *overrides,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "encoder_weights.pt"


def test_pretraining_records_geometry_and_classes_and_encoders_check_them(
    named_arrays: Path, tmp_path: Path
) -> None:
    weights = pretrain(
        named_arrays, tmp_path / "pre", "data.classes=[0,1,2,3,4,5]", "encoder.stem_pool=false"
    )
    info = json.loads(weights.with_suffix(".json").read_text())
    assert info["name"] == "resnet18" and info["num_classes"] == 6
    assert info["classes"] == NAMES[:6]
    assert info["stem_pool"] is False and info["input_scale"] == 1
    assert torch.load(weights, weights_only=True)["fc.weight"].shape == (6, 512)

    encoder = Encoder(weights=str(weights), depth=3, stem_pool=False)
    assert encoder.reductions == [2, 2, 4]
    with pytest.raises(ConfigError, match=r"pretrained with encoder\.stem_pool=false"):
        Encoder(weights=str(weights), depth=3)


def test_evaluate_refuses_a_classifier_of_other_classes(named_arrays: Path, tmp_path: Path):
    weights = pretrain(named_arrays, tmp_path / "pre", "data.classes=[0,1,2,3,4,5]")
    run_dir = tmp_path / "run"
    trained = run_script(
        "train.py",
        *ARRAYS_ONE_BATCH,
        f"data.path={named_arrays}",
        "data.classes=[6,7,8,9]",
        f"hydra.run.dir={run_dir}",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    ckpt = json.loads((run_dir / "metrics.json").read_text())["best_ckpt"]
    result = run_script(
        "evaluate.py",
        f"ckpt_path={ckpt}",
        f"classifier_weights={weights}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: classifier_weights={weights} was trained on classes {NAMES[:6]}, but the data "
        f"has {NAMES[6:]}: pretrain one on this data's classes (scripts/pretrain_encoder.py "
        "with the same data and data.classes)."
    ]
