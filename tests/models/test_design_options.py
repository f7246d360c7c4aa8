"""The design options of the quality study: decoder form, bottleneck, perceptual loss,
one-cycle schedule, sampled training metrics. Each is a config option; each is exercised."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from autoencoder.checkpointing import read_checkpoint
from autoencoder.config import instantiate
from autoencoder.encode import export_encoder, load_encoder
from autoencoder.errors import ConfigError
from autoencoder.examples import smoke_overrides
from autoencoder.losses import PerceptualLoss, ReconstructionLoss
from autoencoder.models.autoencoder import Autoencoder
from autoencoder.models.decoders import Decoder, ResidualBlock
from autoencoder.models.encoders import Encoder
from autoencoder.param_groups import schedule_multiplier
from autoencoder.runs import build_model
from autoencoder.train import train
from tests.probes import CountUpdates

# ---------------------------------------------------------------------------- decoder


@pytest.mark.parametrize("block", ["plain", "residual"])
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("progressive", [False, True])
def test_every_decoder_form_returns_images_of_the_input_size(block, norm, progressive) -> None:
    encoder = Encoder("resnet18", weights=None, depth=2)  # the stem downsamples 4x at once
    decoder = functools.partial(
        Decoder, block=block, norm=norm, progressive=progressive, blocks_per_stage=2
    )
    model = Autoencoder(encoder, decoder=decoder, latent_channels=4).eval()
    with torch.no_grad():
        output = model(torch.rand(2, 3, 32, 32))
    assert output.shape == (2, 3, 32, 32) and output.min() >= 0 and output.max() <= 1
    kinds = {type(m) for m in model.decoder.modules()}
    assert (ResidualBlock in kinds) == (block == "residual")
    assert (nn.BatchNorm2d in kinds, nn.GroupNorm in kinds) == (norm == "batch", norm == "group")
    resizes = [m for m in model.decoder.modules() if isinstance(m, nn.Upsample)]
    assert [m.scale_factor for m in resizes] == ([2.0, 2.0] if progressive else [4.0])


def test_a_residual_block_starts_as_the_identity_on_activations() -> None:
    block = ResidualBlock(8).eval()
    x = torch.rand(2, 8, 5, 5)  # non-negative, like the ReLU output it follows
    torch.testing.assert_close(block(x), x)


def test_the_default_decoder_keeps_the_weight_names_of_earlier_checkpoints() -> None:
    decoder = Decoder(4, [64, 64], [4, 4])
    assert list(decoder.state_dict())[:4] == [
        "input.0.weight",
        "input.1.weight",
        "input.1.bias",
        "input.1.running_mean",
    ]
    assert "blocks.1.0.1.weight" in decoder.state_dict()  # resize, then conv at index 1
    assert "blocks.1.1.0.weight" in decoder.state_dict()  # the extra block's conv


# ------------------------------------------------------------------------- bottleneck


def test_a_3x3_tanh_bottleneck_keeps_the_latent_size_and_bounds_it(tmp_path: Path) -> None:
    model = Autoencoder(
        Encoder("resnet18", weights=None, depth=2),
        latent_channels=4,
        bottleneck_kernel_size=3,
        bottleneck_activation="tanh",
    ).eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        latent = model.encode(images)
    assert latent.shape == (3, 4, 8, 8) and latent.abs().max() < 1
    assert model.architecture()["model.bottleneck_kernel_size"] == 3
    exported = load_encoder(export_encoder(model, tmp_path / "enc.pt").with_suffix(".pt"))
    with torch.no_grad():
        torch.testing.assert_close(exported(images), latent)
    with pytest.raises(ConfigError, match="bottleneck_kernel_size must be 1 or 3"):
        Autoencoder(Encoder("resnet18", weights=None, depth=2), bottleneck_kernel_size=5)


def test_weights_saved_when_the_bottleneck_was_a_bare_conv_still_load(tmp_path: Path) -> None:
    """Checkpoints and exported encoders written before :class:`Bottleneck` existed: the
    model held the conv as ``bottleneck`` and its activation beside it, and the sidecar of
    an exported encoder had no small-image options."""
    old = nn.Module()
    old.encoder = Encoder("resnet18", weights=None, depth=2)
    old.bottleneck = nn.Conv2d(64, 4, kernel_size=3, padding=1)
    old.latent_activation = nn.Tanh()
    old.decoder = Decoder(4, old.encoder.out_channels, old.encoder.reductions)
    model = Autoencoder(
        Encoder("resnet18", weights=None, depth=2),
        latent_channels=4,
        bottleneck_kernel_size=3,
        bottleneck_activation="tanh",
    )
    model.load_state_dict(old.state_dict())  # strict: the same names and shapes
    images = torch.rand(2, 3, 32, 32)
    old.eval(), model.eval()
    with torch.no_grad():
        expected = old.latent_activation(old.bottleneck(old.encoder(images)))
        torch.testing.assert_close(model.encode(images), expected)

    exported = tmp_path / "old_encoder.pt"
    torch.save(
        {k: v for k, v in old.state_dict().items() if k.startswith(("encoder.", "bottleneck."))},
        exported,
    )
    sidecar = {"name": "resnet18", "depth": 2, "latent_channels": 4, "normalize": True}
    sidecar |= {"bottleneck_kernel_size": 3, "bottleneck_activation": "tanh"}
    exported.with_suffix(".json").write_text(json.dumps(sidecar))
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(exported)(images), expected)


def test_the_exported_encoder_keeps_the_encoder_options_for_small_images(tmp_path: Path) -> None:
    encoder = Encoder("resnet18", weights=None, depth=3, stem_pool=False, input_scale=2)
    model = Autoencoder(encoder, latent_channels=8, bottleneck_activation="relu").eval()
    meta = json.loads(export_encoder(model, tmp_path / "encoder.pt").read_text())
    assert (meta["stem_pool"], meta["input_scale"], meta["reduction"]) == (False, 2, 2)
    exported = load_encoder(tmp_path / "encoder.pt")
    assert (exported.encoder.stem_pool, exported.encoder.input_scale) == (False, 2)
    assert exported.encoder.reductions == model.encoder.reductions == [1, 1, 2]
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        latent = exported(images)
        assert latent.shape == (2, 8, 16, 16)
        torch.testing.assert_close(latent, model.encode(images))


# ---------------------------------------------------------------------- perceptual loss


def test_perceptual_distance_is_zero_for_equal_images_and_has_gradients() -> None:
    torch.manual_seed(0)
    loss = PerceptualLoss(functools.partial(Encoder, "resnet18", weights=None, depth=2))
    target = torch.rand(2, 3, 32, 32)
    assert loss(target, target).item() == 0.0
    reconstruction = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    value = loss(reconstruction, target)
    value.backward()
    assert value.item() > 0 and reconstruction.grad is not None
    assert reconstruction.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.network().parameters())


def test_the_perceptual_network_is_not_part_of_the_model(tmp_path: Path) -> None:
    weights = tmp_path / "classifier.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    model = Autoencoder(
        Encoder("resnet18", weights=None, depth=2),
        latent_channels=4,
        loss={"mse": 1.0, "perceptual": 0.5},
        perceptual={"name": "resnet18", "weights": str(weights), "depth": 2},
    )
    model.loss.prepare()
    network = model.loss.perceptual.network()
    expected = torchvision.models.resnet18(num_classes=10)
    expected.load_state_dict(torch.load(weights, weights_only=True))
    torch.testing.assert_close(network.stages["stem"][0].weight, expected.conv1.weight)
    assert not any(key.startswith("loss.") for key in model.state_dict())
    grouped = {id(p) for g in model.parameter_groups() for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters()}  # the network's are not there
    assert model.loss.weights == {"mse": 1.0, "perceptual": 0.5}


def test_a_fit_with_the_perceptual_term_trains_and_a_missing_network_stops_it(
    compose_cfg, tmp_path: Path
) -> None:
    weights = tmp_path / "classifier.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    base = (
        *smoke_overrides(32, 16, 16),
        "trainer.max_epochs=1",
        "test=false",
        "logger=csv",
        "model.loss.perceptual=0.1",
        "model.perceptual.name=resnet18",
        "model.perceptual.depth=2",
    )
    cfg = compose_cfg(*base, f"model.perceptual.weights={weights}", output_dir=tmp_path / "ok")
    summary, _ = train(cfg)
    # the validation loss is the MSE plus 0.1 x the distance of a network of the same weights
    model = build_model(cfg)
    model.load_state_dict(read_checkpoint(summary["best_ckpt"])["state_dict"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    (images, *_), *more = datamodule.val_dataloader()  # one batch: 16 images
    assert not more
    network = PerceptualLoss(functools.partial(Encoder, "resnet18", weights=str(weights), depth=2))
    with torch.no_grad():
        reconstruction = model.eval()(images)
        distance = float(network(reconstruction, images))
    mse = float(torch.nn.functional.mse_loss(reconstruction, images))
    with (tmp_path / "ok" / "csv" / "metrics.csv").open() as file:
        (validation,) = [row for row in csv.DictReader(file) if row.get("val/loss")]
    assert distance > 0
    assert float(validation["val/mse"]) == pytest.approx(mse, rel=1e-4)
    assert float(validation["val/loss"]) == pytest.approx(mse + 0.1 * distance, rel=1e-4)
    assert summary["val/psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
    missing = r"model\.perceptual\.weights='.*missing\.pt': no such file"
    with pytest.raises(ConfigError, match=missing):
        train(
            compose_cfg(
                *base,
                f"model.perceptual.weights={tmp_path / 'missing.pt'}",
                output_dir=tmp_path / "missing",
            )
        )
    assert not (tmp_path / "missing" / "checkpoints").exists()  # stopped before training


def test_a_loss_without_terms_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no terms of non-zero weight"):
        ReconstructionLoss({"mse": 0.0, "ssim": 0.0})
    with pytest.raises(ConfigError, match=r"unknown loss term\(s\) \['lpips'\]"):
        ReconstructionLoss({"lpips": 1.0})


# --------------------------------------------------------------------------- schedule


def test_onecycle_follows_torchs_one_cycle_lr() -> None:
    total = 40
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total)
    for step in range(total):
        expected = optimizer.param_groups[0]["lr"]
        assert 0.1 * schedule_multiplier("onecycle", step, total) == pytest.approx(expected)
        optimizer.step()
        reference.step()


# ------------------------------------------------------------------- training metrics


@pytest.mark.parametrize(("every", "updates"), [(1, 8), (3, 4), (None, 0)])
def test_training_metrics_are_computed_on_a_sample_of_steps(
    compose_cfg, tmp_path: Path, every: int | None, updates: int
) -> None:
    """4 steps per epoch, 2 epochs: every batch, batches 0 and 3 of each epoch, or none."""
    cfg = compose_cfg(
        *smoke_overrides(64, 16, 16),
        "trainer.max_epochs=2",
        "test=false",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        f"model.train_metrics_every_n_steps={'null' if every is None else every}",
        "+callbacks.counter._target_=tests.probes.CountUpdates",
    )
    summary, _ = train(cfg)
    assert CountUpdates.instances[-1].updates == updates
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        logged = {key for row in csv.DictReader(file) for key, value in row.items() if value}
    assert ("train/psnr" in logged) == (every is not None)
    assert "train/loss_step" in logged and summary["val/psnr"] is not None
