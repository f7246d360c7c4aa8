"""The README's figures: drawn from the model and from a run's csv log."""

from __future__ import annotations

from pathlib import Path

from autoencoder.examples import train_tiny_run
from autoencoder.figures import architecture, phases, trace
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.encoders import Encoder


def test_the_trace_follows_an_image_through_encoder_latent_and_decoder() -> None:
    model = Autoencoder(Encoder("resnet18", weights=None, depth=2), latent_channels=4)
    tensors = [(t.label, t.part, t.shape) for t in trace(model)]
    assert tensors[:4] == [
        ("image", "image", (3, 32, 32)),
        ("stem", "encoder", (64, 8, 8)),
        ("layer1", "encoder", (64, 8, 8)),
        ("bottleneck (1x1 conv)", "latent", (4, 8, 8)),
    ]
    assert tensors[-2][0] == "mirrors stem (4x up)"
    assert tensors[-1] == ("output conv, sigmoid", "image", (3, 32, 32))


def test_the_figures_are_written(tmp_path: Path) -> None:
    assert architecture(tmp_path / "architecture.png").stat().st_size > 10_000
    run = train_tiny_run(tmp_path / "run")
    assert phases(run, tmp_path / "phases.png", "command").stat().st_size > 10_000
