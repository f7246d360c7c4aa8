"""The weight average (``callbacks=ema``): with two-phase fine-tuning, through a resume, and
in what evaluation measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autoencoder.callbacks import EMAWeights, ema_decay
from autoencoder.checkpointing import read_checkpoint
from autoencoder.errors import ConfigError
from autoencoder.examples import smoke_overrides
from autoencoder.runs import load_autoencoder, load_run_config
from autoencoder.train import train
from tests.conftest import run_script

# 48 images in batches of 16: 3 steps per epoch; phase 1 is the first epoch.
EMA_RUN = (
    *smoke_overrides(48, 16, 16),
    "callbacks=ema",
    "callbacks.ema.decay=0.5",
    "logger=csv",
    "trainer.deterministic=true",
    "finetune.patience=null",
    "finetune.max_frozen_epochs=1",
    "finetune.warmup_steps=2",
)


def encoder_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if k.startswith("encoder.")}


def test_frozen_stages_stay_the_pretrained_weights_in_the_average(compose_cfg, tmp_path) -> None:
    """Through phase 1 the average of every encoder weight is the weight itself; the decoder's
    average differs from its current weights."""
    summary, _ = train(compose_cfg(*EMA_RUN, "trainer.max_epochs=1", output_dir=tmp_path / "run"))
    assert summary["transition_epoch"] is None or summary["transition_step"] >= 3
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    for key, value in encoder_state(current).items():
        if value.is_floating_point():
            torch.testing.assert_close(averaged[key], value, rtol=1e-6, atol=1e-7, msg=key)
    decoder = [k for k in current if k.startswith("decoder.") and k.endswith(".weight")]
    assert any(not torch.equal(averaged[k], current[k]) for k in decoder)


def test_phase_two_moves_the_average_of_the_encoder(compose_cfg, tmp_path) -> None:
    summary, _ = train(compose_cfg(*EMA_RUN, "trainer.max_epochs=2", output_dir=tmp_path / "run"))
    assert summary["transition_epoch"] == 0
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    averaged = encoder_state(checkpoint["state_dict"])
    current = encoder_state(checkpoint["current_model_state"])
    moved = [
        k for k in current if k.endswith(".weight") and not torch.equal(averaged[k], current[k])
    ]
    assert moved, "phase 2 trains the encoder: its average must lag its current weights"


def test_resume_continues_the_average(compose_cfg, tmp_path) -> None:
    """Two epochs in one go, and one epoch then a resume for the second: the same average."""
    whole = tmp_path / "whole"
    train(compose_cfg(*EMA_RUN, "trainer.max_epochs=2", output_dir=whole))
    split = tmp_path / "split"
    train(compose_cfg(*EMA_RUN, "trainer.max_epochs=1", output_dir=split))
    last = split / "checkpoints" / "last.ckpt"
    train(compose_cfg(*EMA_RUN, "trainer.max_epochs=2", f"ckpt_path={last}", output_dir=split))
    expected = read_checkpoint(whole / "checkpoints" / "last.ckpt")
    resumed = read_checkpoint(last)
    for key in ("state_dict", "current_model_state"):
        for name, value in expected[key].items():
            torch.testing.assert_close(resumed[key][name], value, msg=f"{key}: {name}")
    assert expected["averaging_state"]["n_averaged"] == resumed["averaging_state"]["n_averaged"]


def test_the_final_test_and_evaluate_measure_the_averaged_weights(tmp_path) -> None:
    """The test after fitting and ``scripts/evaluate.py`` both use the averaged weights that the
    best checkpoint's ``state_dict`` holds, not the current ones it keeps beside them."""
    run_dir = tmp_path / "run"
    trained = run_script("train.py", *EMA_RUN, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads((run_dir / "metrics.json").read_text())
    ckpt = Path(summary["best_ckpt"])
    evaluated = run_script(
        "evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", "device=cpu"
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["test/mse"] == pytest.approx(summary["test/mse"], rel=1e-5)

    checkpoint = read_checkpoint(ckpt)
    model = load_autoencoder(ckpt, load_run_config(ckpt))
    for name, value in model.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][name]), name
    images = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        averaged = model(images)
        model.load_state_dict(checkpoint["current_model_state"])
        current = model(images)
    assert not torch.allclose(averaged, current), "the average must differ from the weights"


def test_a_decay_outside_zero_one_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"callbacks\.ema\.decay"):
        EMAWeights(decay=1.0)


def test_the_decay_ramps_up_to_its_value_and_stays_there() -> None:
    counts = torch.tensor([0, 1, 10, 100, 1000, 100_000])
    ramped = ema_decay(0.99, counts, 2 / 3)
    assert ramped[0] == 0.0, "the first update takes the current weights"
    assert torch.all(ramped[1:] >= ramped[:-1])
    assert float(ramped[2]) < 0.85
    assert float(ramped[-1]) == pytest.approx(0.99)
    assert torch.allclose(ema_decay(0.99, counts, None), torch.tensor(0.99))


# 128 images in batches of 16, 4 epochs: 32 steps, where a constant decay of 0.99 would keep
# 0.99**32 = 72% of the random initialisation in the average.
SHORT_RUN = (
    *smoke_overrides(128, 32, 64),
    "encoder.weights=null",
    "finetune=full",
    "model.lr=3e-3",
    "trainer.max_epochs=4",
    "trainer.deterministic=true",
    "logger=none",
)


def test_a_short_run_with_the_average_is_not_worse_than_without(compose_cfg, tmp_path) -> None:
    """With the warm-up the average of a run of a few steps is about as good as its weights;
    without it (Lightning's constant decay) it is far worse, which is what the warm-up fixes."""
    psnr = {}
    for name, callbacks in (
        ("none", ("callbacks=default",)),
        ("warmup", ("callbacks=ema",)),
        ("constant", ("callbacks=ema", "callbacks.ema.warmup_power=null")),
    ):
        cfg = compose_cfg(*SHORT_RUN, *callbacks, output_dir=tmp_path / name)
        psnr[name] = train(cfg)[0]["test/psnr"]
    assert psnr["warmup"] >= psnr["none"] - 0.25, psnr
    assert psnr["constant"] < psnr["none"] - 1.0, psnr
