"""``init_from``: a new run from another run's weights, the model possibly grown."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from autoencoder.checkpointing import read_checkpoint
from autoencoder.config import instantiate
from autoencoder.errors import ConfigError
from autoencoder.examples import smoke_overrides
from autoencoder.preflight import check_job
from autoencoder.runs import build_model, start_from_checkpoint
from autoencoder.train import train

# 64 images in batches of 16: 4 steps per epoch, everything trained from the first step.
RUN = (
    *smoke_overrides(64, 32, 32),
    "decoder.block=residual",
    "finetune=full",
    "callbacks=ema",
    "callbacks.ema.decay=0.5",
    "trainer.deterministic=true",
)
GROWN = "decoder.blocks_per_stage=2"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A finished three-epoch run with EMA: its last.ckpt and metrics."""
    from tests.conftest import compose_job

    out = tmp_path_factory.mktemp("source")
    metrics, _ = train(compose_job("train", *RUN, "trainer.max_epochs=3", output_dir=out))
    return out / "checkpoints" / "last.ckpt", metrics


def validation_mse(model: torch.nn.Module, cfg: DictConfig) -> float:
    """The mean squared error of ``model`` over every pixel of the validation split of
    ``cfg``'s data, in eval mode and fp32."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    squared, count = 0.0, 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            squared += float(((model.eval()(images) - images) ** 2).sum())
            count += images.numel()
    return squared / count


def test_a_grown_decoder_starts_as_the_trained_model(compose_cfg, source) -> None:
    """The residual blocks added by a larger blocks_per_stage are the only weights left at
    their initialisation, and the grown model reconstructs exactly as the trained one."""
    ckpt, _ = source
    trained = build_model(compose_cfg(*RUN))
    trained.load_state_dict(read_checkpoint(ckpt)["state_dict"])
    grown = build_model(compose_cfg(*RUN, GROWN))
    new = start_from_checkpoint(grown, ckpt)
    # one new block per decoder stage (3 stages), each two convs and two BatchNorms
    assert new and all(name.startswith("decoder.blocks.") for name in new)
    assert {name.split(".")[3] for name in new} == {"2"}  # decoder.blocks.<stage>.2.*
    assert len({name.split(".")[2] for name in new}) == 3
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grown.eval()(images), trained.eval()(images))


def test_the_weights_are_the_average_of_an_ema_run(compose_cfg, source) -> None:
    ckpt, _ = source
    checkpoint = read_checkpoint(ckpt)
    model = build_model(compose_cfg(*RUN))
    assert start_from_checkpoint(model, ckpt) == []
    state = model.state_dict()
    for key, value in checkpoint["state_dict"].items():
        torch.testing.assert_close(state[key], value, msg=key)
    current = checkpoint["current_model_state"]
    assert any(not torch.equal(state[k], current[k]) for k in current if k.endswith(".weight"))


def test_a_grown_run_trains_on_from_the_trained_weights(compose_cfg, source, tmp_path) -> None:
    """One epoch of the grown model from the trained weights, against the same epoch from
    scratch: a fresh epoch count and schedule, and it starts where the trained run ended."""
    ckpt, trained = source
    grown, _ = train(
        compose_cfg(
            *RUN, GROWN, f"init_from={ckpt}", "trainer.max_epochs=1", output_dir=tmp_path / "a"
        )
    )
    scratch, _ = train(compose_cfg(*RUN, GROWN, "trainer.max_epochs=1", output_dir=tmp_path / "b"))
    assert grown["epochs"] == 1
    assert read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert grown["test/psnr"] > scratch["test/psnr"] + 1.0
    assert grown["test/psnr"] > trained["test/psnr"] - 1.0


def test_resuming_does_not_read_init_from(compose_cfg, source, tmp_path) -> None:
    """With ckpt_path the resumed checkpoint holds the weights: init_from, here a file that
    does not exist, is not read."""
    ckpt, _ = source
    summary, _ = train(
        compose_cfg(
            *RUN,
            f"ckpt_path={ckpt}",
            f"init_from={tmp_path / 'missing.ckpt'}",
            "trainer.max_epochs=4",
        )
    )
    assert summary["epochs"] == 4


@pytest.mark.parametrize(
    ("overrides", "wanted"),
    [
        (("decoder.blocks_per_stage=0",), "unexpected weights: decoder.blocks.0.1"),
        (("model.latent_channels=8",), "weights of another shape: bottleneck"),
    ],
    ids=["fewer-blocks", "other-latent"],
)
def test_weights_that_would_be_dropped_or_reshaped_are_refused(
    compose_cfg, source, overrides: tuple[str, ...], wanted: str
) -> None:
    ckpt, _ = source
    model = build_model(compose_cfg(*RUN, *overrides))
    with pytest.raises(ConfigError, match="Only weights can be added") as error:
        start_from_checkpoint(model, ckpt)
    assert str(error.value).startswith(f"init_from={ckpt} does not fit this model")
    assert wanted in str(error.value)


def test_a_missing_file_names_the_option(compose_cfg, tmp_path) -> None:
    model = build_model(compose_cfg(*RUN))
    with pytest.raises(ConfigError, match=r"init_from='.*nothing\.ckpt': no such file"):
        start_from_checkpoint(model, tmp_path / "nothing.ckpt")


def test_the_adaptation_recipe_needs_a_run_to_start_from(compose_cfg, tmp_path) -> None:
    cfg = compose_cfg(
        "experiment=adapt", "data=synthetic", "encoder.weights=null", output_dir=tmp_path / "a"
    )
    with pytest.raises(ConfigError, match=r"requires_init_from=true.*set init_from="):
        check_job(cfg)


def test_a_run_from_a_checkpoint_reads_no_other_encoder_weights(compose_cfg, source, tmp_path):
    """init_from (and a resume) take every weight from the checkpoint: encoder.weights, here a
    file that does not exist, is not read."""
    ckpt, _ = source
    cfg = compose_cfg(
        *RUN,
        f"init_from={ckpt}",
        f"encoder.weights={tmp_path / 'missing.pt'}",
        "trainer.max_epochs=1",
        output_dir=tmp_path / "adapted",
    )
    start = train(cfg)[0]["start"]
    # the start is the checkpoint's (averaged) weights, evaluated here on the same split
    source = build_model(compose_cfg(*RUN))
    source.load_state_dict(read_checkpoint(ckpt)["state_dict"])
    mse = validation_mse(source, cfg)
    assert start["val/mse"] == pytest.approx(mse, rel=1e-4)
    assert start["val/psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
