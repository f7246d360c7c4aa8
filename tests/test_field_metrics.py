"""LPIPS and rFID (autoencoder/field_metrics.py), offline: LPIPS with backbone weights the
test writes into a temporary torch hub cache, FID with a small feature extractor the test
builds; identical images score 0 and noise raises both. Through evaluate: metrics=[lpips]."""

from __future__ import annotations

import json
import socket
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from autoencoder.errors import ConfigError, ResourceUnavailableError
from autoencoder.evaluate import evaluate
from autoencoder.field_metrics import LPIPS_WEIGHTS, FieldMetrics
from tests.conftest import TrainedRun, compose_job


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any network connection fails, as on a machine without one."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(
        torch.hub,
        "download_url_to_file",
        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")),
    )


@pytest.fixture
def hub_with_alexnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A torch hub cache holding an AlexNet state dict under torchvision's file name."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(
        torchvision.models.alexnet().state_dict(), hub / "checkpoints" / LPIPS_WEIGHTS["alex"]
    )
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def images(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.rand(count, 3, 8, 8, generator=generator)
    return nn.functional.interpolate(smooth, size=(32, 32), mode="bilinear")


class TinyFeatures(nn.Module):
    """uint8 images to 8 features: a fixed random conv, pooled."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 255).mean((2, 3))


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(offline, hub_with_alexnet) -> None:
    originals = images(8, seed=0)
    scores = []
    for noise in (0.0, 0.05, 0.2):
        metrics = FieldMetrics(["lpips"], resize=64)
        noisy = (
            originals
            + noise * torch.randn(originals.shape, generator=torch.Generator().manual_seed(2))
        ).clamp(0, 1)
        metrics.update(originals, noisy)
        scores.append(metrics.compute()["test/lpips"])
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < scores[1] < scores[2]
    assert (
        FieldMetrics(["lpips"]).conventions()["lpips"]["resize"]
        == "224 x 224, bilinear, antialiased"
    )


def test_lpips_offline_without_the_weights_names_the_file_and_the_cache(
    offline, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(ResourceUnavailableError) as error:
        FieldMetrics(["lpips"])
    message = str(error.value)
    assert "alexnet-owt-7be5be79.pth" in message
    assert f"put the file into {tmp_path / 'empty_hub'}/checkpoints/" in message


def test_fid_is_about_zero_for_identical_images_and_grows_with_noise() -> None:
    originals = images(64, seed=0)
    scores = []
    for noise in (0.0, 0.1, 0.3):
        metrics = FieldMetrics(["fid"], fid_feature=TinyFeatures())
        generator = torch.Generator().manual_seed(3)
        metrics.update(
            originals,
            (originals + noise * torch.randn(originals.shape, generator=generator)).clamp(0, 1),
        )
        scores.append(metrics.compute()["test/fid"])
    assert abs(scores[0]) < 1e-3
    assert scores[0] < scores[1] < scores[2]


def test_an_unknown_metric_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"metrics=\['lpips', 'is'\]: unknown is; use any of lpips, fid"
    ):
        FieldMetrics(["lpips", "is"])


def test_evaluate_writes_lpips_and_its_conventions(
    run: TrainedRun, tmp_path: Path, offline, hub_with_alexnet
) -> None:
    out = tmp_path / "evaluation"
    cfg = compose_job(
        "evaluate", f"ckpt_path={run.ckpt}", "metrics=[lpips]", "lpips.resize=64", "probe=false",
        output_dir=out,
    )  # fmt: skip
    summary = evaluate(cfg)
    written = json.loads((out / "metrics.json").read_text())
    assert written["test/lpips"] == summary["test/lpips"] > 0
    assert written["metric_conventions"]["lpips"]["net"] == "alex"
    assert "test/fid" not in written
