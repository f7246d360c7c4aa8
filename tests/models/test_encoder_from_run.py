"""``encoder.weights=<a training run's checkpoint>``: the run's encoder (its EMA average where
it kept one) under a fresh decoder, with the geometry checks of pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoencoder.checkpointing import read_checkpoint
from autoencoder.errors import ConfigError
from autoencoder.examples import smoke_overrides
from autoencoder.models.encoders import Encoder
from autoencoder.train import train

# experiment=smoke: ResNet-18 cut after layer2 (depth 3), stem max-pool kept; with an average
SOURCE = (*smoke_overrides(64, 32, 32), "trainer.max_epochs=1", "callbacks=ema", "logger=none")


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import compose_job

    folder = tmp_path_factory.mktemp("source") / "run"
    summary, _ = train(compose_job("train", *SOURCE, "finetune=full", output_dir=folder))
    return Path(summary["best_ckpt"])


def run_encoder(checkpoint: dict, stage: str) -> dict[str, torch.Tensor]:
    prefix = f"encoder.stages.{stage}."
    return {
        k.removeprefix(prefix): v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(prefix)
    }


def test_the_encoder_takes_the_runs_averaged_encoder_weights(source_ckpt: Path) -> None:
    checkpoint = read_checkpoint(source_ckpt)
    encoder = Encoder("resnet18", weights=str(source_ckpt), depth=3)
    for stage in encoder.stage_names:
        expected = run_encoder(checkpoint, stage)
        loaded = encoder.stages[stage].state_dict()
        assert set(loaded) == set(expected), stage
        for key, value in expected.items():
            assert torch.equal(loaded[key], value), f"{stage}.{key}"
    # the average, not the current weights, which the checkpoint keeps beside it
    current = checkpoint["current_model_state"]
    differs = [
        k
        for k, v in current.items()
        if k.startswith("encoder.")
        and v.is_floating_point()
        and not torch.equal(v, checkpoint["state_dict"][k])
    ]
    assert differs, "an EMA run's average differs from its current encoder weights"


def test_a_shallower_cut_takes_the_lower_stages(source_ckpt: Path) -> None:
    checkpoint = read_checkpoint(source_ckpt)
    encoder = Encoder("resnet18", weights=str(source_ckpt), depth=2)
    assert encoder.stage_names == ["stem", "layer1"]
    for key, value in run_encoder(checkpoint, "layer1").items():
        assert torch.equal(encoder.stages["layer1"].state_dict()[key], value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "resnet34", "depth": 3}, r"a run of encoder resnet18.*set encoder=resnet18"),
        ({"name": "resnet18", "depth": 4}, r"kept 3 stages.*encoder\.depth=3 or less"),
        ({"name": "resnet18", "depth": 3, "stem_pool": False}, r"encoder\.stem_pool=true"),
        ({"name": "resnet18", "depth": 3, "input_scale": 2}, r"encoder\.input_scale=1"),
    ],
)
def test_a_run_of_another_encoder_or_geometry_is_refused(
    source_ckpt: Path, options: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Encoder(weights=str(source_ckpt), **options)


def test_a_fresh_decoder_trains_two_phase_on_the_runs_encoder(
    source_ckpt: Path, compose_cfg, tmp_path: Path
) -> None:
    """The mission's shape with an encoder pretrained for reconstruction: phase 1 trains the
    new decoder against the run's frozen encoder, phase 2 fine-tunes both."""
    cfg = compose_cfg(
        *smoke_overrides(64, 32, 32),
        f"encoder.weights={source_ckpt}",
        "trainer.max_epochs=2",
        "finetune.max_frozen_epochs=1",
        "finetune.patience=null",
        "logger=none",
        output_dir=tmp_path / "target",
    )
    summary, _ = train(cfg)
    assert summary["transition_epoch"] == 0
    target = read_checkpoint(summary["best_ckpt"])
    source = read_checkpoint(source_ckpt)
    decoder = [k for k in target["state_dict"] if k.startswith("decoder.")]
    assert any(
        not torch.equal(target["state_dict"][k], source["state_dict"][k]) for k in decoder
    ), "the decoder is new, not the run's"
