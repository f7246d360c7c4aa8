"""AdaBN (``reestimate_bn=true``): before the first step, the BatchNorm running statistics
become the training images' own; no weight moves, and every module keeps its mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autoencoder.bn_reestimation import batchnorm_layers, reestimate_batchnorm
from autoencoder.errors import ConfigError
from autoencoder.examples import smoke_overrides
from autoencoder.preflight import check_config
from autoencoder.train import train
from tests.conftest import compose_job


def test_the_statistics_are_the_images_own_and_nothing_else_changes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    model[3].eval()  # a frozen stage's BatchNorm: eval mode, as two-phase keeps it
    model.train()
    model[3].eval()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    batches = [torch.rand(8, 3, 6, 6) * 2 + 1 for _ in range(3)]  # far from mean 0, var 1

    assert reestimate_batchnorm(model, [(b, None) for b in batches], torch.device("cpu")) == 2

    with torch.no_grad():
        inputs = [model[0](b) for b in batches]
    expected_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    expected_var = torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in inputs]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    torch.testing.assert_close(model[1].running_var, expected_var)
    assert model[1].momentum == 0.1, "the layer's own momentum is back"
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())
    assert model[1].training and not model[3].training, "each module keeps its mode"
    assert reestimate_batchnorm(nn.Linear(2, 2), [torch.rand(2, 2)], torch.device("cpu")) == 0


def test_a_fit_starts_from_the_training_images_statistics_with_its_weights_untouched(
    tmp_path: Path,
) -> None:
    cfg = compose_job(
        "train",
        *smoke_overrides(48, 16, 16),
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "score_start=true",
        "reestimate_bn=true",
        "+callbacks.snapshot._target_=tests.probes.BatchNormSnapshot",
        f"+callbacks.snapshot.folder={tmp_path / 'probe'}",
        output_dir=tmp_path / "run",
    )
    train(cfg)
    record = torch.load(tmp_path / "probe" / "snapshot.pt", weights_only=False)
    start, step1 = record["fit_start"], record["step1"]
    running = [
        k for k in start if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert running, "the smoke model has BatchNorm layers"
    for key in start:
        if key not in running:
            assert torch.equal(start[key], step1[key]), f"{key} moved before the first step"
    layer = record["first_bn"]
    assert not torch.allclose(start[f"{layer}.running_mean"], step1[f"{layer}.running_mean"])
    torch.testing.assert_close(
        step1[f"{layer}.running_mean"], record["target_mean"], rtol=0.05, atol=0.02
    )
    torch.testing.assert_close(
        step1[f"{layer}.running_var"], record["target_var"], rtol=0.05, atol=0.02
    )
    # the two-phase start: the frozen encoder's BatchNorm stays in eval mode
    frozen_bn = [
        n
        for n, training in record["modes"].items()
        if n.startswith("encoder") and n.rsplit(".", 1)[-1].startswith("bn") and not training
    ]
    assert frozen_bn, "the frozen stages' BatchNorm is still in eval mode"
    # the start the run scored is the model it was given, before the re-estimation
    saved = torch.load(tmp_path / "run" / "checkpoints" / "start.ckpt", weights_only=False)
    torch.testing.assert_close(
        saved["state_dict"][f"{layer}.running_mean"], start[f"{layer}.running_mean"]
    )


def test_reestimate_bn_takes_true_or_false(tmp_path: Path) -> None:
    cfg = compose_job("train", *smoke_overrides(), "reestimate_bn=sometimes", output_dir=tmp_path)
    with pytest.raises(ConfigError, match="reestimate_bn must be true or false"):
        check_config(cfg)
    assert len(batchnorm_layers(nn.BatchNorm1d(2))) == 1
