"""Pretraining an encoder as a classifier: end to end, weights transfer, user errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import DictConfig

from autoencoder.errors import ConfigError
from autoencoder.models.classifier import Classifier
from autoencoder.models.encoders import Encoder
from autoencoder.pretrain import pretrain, save_encoder_weights
from tests.conftest import FAST_PRETRAIN, compose_job, make_images, run_script


@pytest.fixture
def compose_pretrain(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the pretraining config with overrides, writing outputs under ``tmp_path``."""
    return functools.partial(compose_job, "pretrain", output_dir=tmp_path / "run")


def test_pretrain_saves_weights_that_load_as_encoder(
    arrays_dir: Path, compose_pretrain: Callable[..., DictConfig]
) -> None:
    cfg = compose_pretrain(
        "encoder=resnet18", "data=arrays", f"data.path={arrays_dir}", *FAST_PRETRAIN
    )
    summary = pretrain(cfg)

    weights = Path(cfg.paths.output_dir) / "encoder_weights.pt"
    assert weights.is_file() and summary["weights_path"] == str(weights.resolve())
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["name"] == "resnet18" and metrics["num_classes"] == 10
    assert 0.0 <= metrics["val/acc"] <= 1.0

    saved = torch.load(weights, map_location="cpu", weights_only=True)
    assert saved["fc.weight"].shape == (10, 512)
    # The test metrics are those of the saved weights: recomputed here on the one test
    # batch (the first 16 images of test.npz, in order).
    net = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict(saved)
    test = np.load(arrays_dir / "test.npz")
    images = torch.from_numpy(test["images"][:16]).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(test["labels"][:16])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = net.eval()((images - mean) / std)
    accuracy = float((logits.argmax(1) == labels).float().mean())
    assert metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    loss = float(torch.nn.functional.cross_entropy(logits, labels))
    assert metrics["test/loss"] == pytest.approx(loss, rel=1e-4)
    encoder = Encoder("resnet18", weights=str(weights), depth=5)
    assert torch.equal(encoder.stages["stem"][0].weight, saved["conv1.weight"])


def test_vgg_classifier_runs_on_32px_and_its_weights_load_as_encoder(tmp_path: Path) -> None:
    # The whole pipeline is too slow for a test with VGG: its 120M-parameter classifier
    # head takes seconds per training step on a CPU.
    classifier = Classifier("vgg11_bn", num_classes=10).eval()
    with torch.no_grad():
        assert classifier(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    weights = tmp_path / "vgg.pt"
    save_encoder_weights(classifier, weights)
    encoder = Encoder("vgg11_bn", weights=str(weights), depth=5)
    assert torch.equal(encoder.stages["block1"][0].weight, classifier.net.features[0].weight)


def _arrays(folder: Path, labelled: dict[str, bool]) -> Path:
    folder.mkdir()
    for split, count in (("train", 32), ("test", 8)):
        labels = np.arange(count) % 4 if labelled[split] else None
        extra = {} if labels is None else {"labels": labels}
        np.savez(folder / f"{split}.npz", images=make_images(count), **extra)
    return folder


def test_unlabelled_data_is_a_config_error(
    tmp_path: Path, compose_pretrain: Callable[..., DictConfig]
) -> None:
    folder = _arrays(tmp_path / "unlabelled", {"train": False, "test": False})
    cfg = compose_pretrain("data=arrays", f"data.path={folder}", *FAST_PRETRAIN)
    with pytest.raises(ConfigError, match="data=arrays needs a 'labels' array"):
        pretrain(cfg)


def test_a_split_without_labels_is_a_config_error(
    tmp_path: Path, compose_pretrain: Callable[..., DictConfig]
) -> None:
    folder = _arrays(tmp_path / "half_labelled", {"train": False, "test": True})
    cfg = compose_pretrain("data=arrays", f"data.path={folder}", *FAST_PRETRAIN)
    with pytest.raises(ConfigError, match=r"split has unlabelled images.*'labels' array"):
        pretrain(cfg)


def test_script_writes_weights(arrays_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "script_run"
    result = run_script(
        "pretrain_encoder.py",
        "encoder=resnet18",
        "data=arrays",
        f"data.path={arrays_dir}",
        *FAST_PRETRAIN,
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "encoder_weights.pt").is_file()
    assert f"use encoder.weights={run_dir / 'encoder_weights.pt'}" in result.stdout + result.stderr
