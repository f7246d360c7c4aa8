"""Encoder options for small images: without the stem's max-pool, and inputs scaled up inside
the encoder. Shapes, the bottleneck that is printed, the fine-tuning groups and pretrained
weights stay what they must be."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torchvision

from autoencoder.errors import ConfigError
from autoencoder.examples import smoke_overrides
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.decoders import Decoder
from autoencoder.models.encoders import Encoder
from tests.conftest import run_script

# (encoder arguments, reductions of the kept stages, latent grid on 32 px images)
GEOMETRIES = [
    ({"depth": 3}, [4, 4, 8], 4),
    ({"depth": 3, "stem_pool": False}, [2, 2, 4], 8),
    ({"depth": 3, "input_scale": 2}, [2, 2, 4], 8),
    ({"depth": 4, "input_scale": 4}, [1, 1, 2, 4], 8),
    ({"depth": 4, "stem_pool": False, "input_scale": 2}, [1, 1, 2, 4], 8),
    ({"name": "vgg11", "depth": 3, "stem_pool": False}, [1, 2, 4], 8),
]


@pytest.mark.parametrize(("options", "reductions", "grid"), GEOMETRIES)
def test_reductions_latent_grid_and_output_size(options, reductions, grid) -> None:
    encoder = Encoder(weights=None, **options)
    assert encoder.reductions == reductions
    model = Autoencoder(encoder, partial(Decoder), latent_channels=2).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        latent = model.encode(images)
        output = model(images)
    assert latent.shape == (2, 2, grid, grid)
    assert output.shape == images.shape
    assert model.bottleneck_summary(32, 32) == {
        "latent_floats": 2 * grid * grid,
        "compression_ratio": 3 * 32 * 32 / (2 * grid * grid),
    }


def test_input_scale_resizes_after_normalising() -> None:
    plain = Encoder(weights=None, depth=1).eval()
    scaled = Encoder(weights=None, depth=1, input_scale=2)
    scaled.load_state_dict(plain.state_dict())
    images = torch.rand(1, 3, 16, 16)
    normalised = (images - plain.mean) / plain.std
    upsized = torch.nn.functional.interpolate(normalised, scale_factor=2, mode="bilinear")
    with torch.no_grad():
        expected = plain.stages["stem"](upsized)
        torch.testing.assert_close(scaled.eval()(images), expected)


def test_the_options_keep_weights_and_fine_tuning_groups(tmp_path: Path) -> None:
    """No weight is added or removed: a torchvision state dict loads, and the parameter
    groups (one per stage) are the same as with the default geometry."""
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    default = Encoder(weights=str(weights), depth=3)
    changed = Encoder(weights=str(weights), depth=3, stem_pool=False, input_scale=2)
    for (name, a), (other, b) in zip(
        default.state_dict().items(), changed.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(a, b)

    def groups(encoder: Encoder) -> list[tuple[str, int]]:
        model = Autoencoder(encoder, partial(Decoder), latent_channels=4)
        return [(g["name"], sum(p.numel() for p in g["params"])) for g in model.parameter_groups()]

    assert [name for name, _ in groups(changed)] == [
        "decoder",
        *(f"encoder.{stage}" for stage in ("stem", "layer1", "layer2")),
    ]
    assert groups(changed)[1:] == groups(default)[1:]


def test_impossible_geometries_are_refused_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"encoder\.input_scale=2 or keep the stem's max-pool"):
        Encoder(weights=None, depth=2, stem_pool=False, input_scale=4)
    with pytest.raises(ConfigError, match=r"encoder\.input_scale must be 1, 2, 4 or 8"):
        Encoder(weights=None, depth=2, input_scale=3)


def test_a_training_run_prints_and_records_the_true_bottleneck(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py",
        *smoke_overrides(32, 16, 16),
        "trainer.max_epochs=1",
        "finetune=full",
        "encoder.depth=3",
        "encoder.stem_pool=false",
        "model.latent_channels=4",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "latent 4x8x8 = 256 floats per image, compression 12.0x" in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["latent_floats"] == 256 and metrics["compression_ratio"] == 12.0
