"""The autoencoder's parts beyond the encoder contract (tests/models/test_encoder_contract.py):
the encoder's normalisation and torchvision weights, decoders, losses and metrics."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from autoencoder.errors import ConfigError, ResourceUnavailableError
from autoencoder.losses import ReconstructionLoss
from autoencoder.models.autoencoder import Autoencoder, _metrics
from autoencoder.models.decoders import UPSAMPLE_MODES, Decoder, icnr_
from autoencoder.models.encoders import Encoder


def test_encoder_normalises_pixels_with_imagenet_statistics() -> None:
    encoder = Encoder("resnet18", weights=None, depth=1)
    raw = Encoder("resnet18", weights=None, depth=1, normalize=False)
    raw.load_state_dict(encoder.state_dict())
    images = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    encoder.eval(), raw.eval()
    torch.testing.assert_close(encoder(images), raw((images - mean) / std))


@pytest.mark.parametrize("mode", UPSAMPLE_MODES)
def test_decoder_modes_undo_downsampling(mode: str) -> None:
    decoder = Decoder(16, [64, 64, 128], [4, 4, 8], upsample=mode, width=0.5)
    out = decoder(torch.randn(2, 16, 4, 4))
    assert out.shape == (2, 3, 32, 32)


def test_icnr_makes_pixel_shuffle_start_as_nearest_neighbour() -> None:
    weight = icnr_(torch.empty(4 * 9, 5, 3, 3), scale=3)
    groups = weight.view(4, 9, 5, 3, 3)
    assert torch.equal(groups, groups[:, :1].expand_as(groups))
    conv = torch.nn.Conv2d(5, 36, 3, padding=1, bias=False)
    icnr_(conv.weight, 3)
    shuffled = torch.nn.PixelShuffle(3)(conv(torch.randn(1, 5, 4, 4)))
    blocks = shuffled.unfold(2, 3, 3).unfold(3, 3, 3)  # every 3x3 output block is constant
    assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks))


def test_unknown_names_and_bad_sizes_fail_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="resnet18, resnet34"):
        Encoder("resnet19", weights=None)
    with pytest.raises(ConfigError, match=r"encoder.depth=6 .* Use 1 .. 5"):
        Encoder("resnet18", weights=None, depth=6)
    with pytest.raises(ConfigError, match="resize_conv, pixel_shuffle, transposed"):
        Decoder(8, [64], [4], upsample="bilinear")
    model = Autoencoder(Encoder("resnet18", weights=None, depth=5))
    with pytest.raises(ConfigError, match=r"30x30 .*32x.*Nearest valid sizes: 32;"):
        model.latent_shape(30, 30)


def test_weights_load_from_a_torchvision_state_dict(tmp_path) -> None:
    classifier = torchvision.models.resnet18(num_classes=10)  # another head: ignored
    path = tmp_path / "resnet18.pt"
    torch.save(classifier.state_dict(), path)
    encoder = Encoder("resnet18", weights=str(path))
    torch.testing.assert_close(encoder.stages["stem"][0].weight, classifier.conv1.weight)
    torch.testing.assert_close(
        encoder.stages["layer4"][1].bn2.running_var, classifier.layer4[1].bn2.running_var
    )
    # a Lightning-style wrapper with prefixed keys loads too
    torch.save({"state_dict": {f"model.{k}": v for k, v in classifier.state_dict().items()}}, path)
    wrapped = Encoder("resnet18", weights=str(path))
    torch.testing.assert_close(
        wrapped.stages["layer1"][0].conv1.weight, classifier.layer1[0].conv1.weight
    )


def test_weights_for_another_architecture_are_rejected(tmp_path) -> None:
    path = tmp_path / "resnet50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(ConfigError, match=r"does not fit encoder resnet18: .*another architecture"):
        Encoder("resnet18", weights=str(path))
    with pytest.raises(ConfigError, match="no such file"):
        Encoder("resnet18", weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        Encoder("resnet18", weights=str(tmp_path))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="weights-only state dict"):
        Encoder("resnet18", weights=str(garbage))


def test_imagenet_weights_offline_name_the_local_alternatives(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ResourceUnavailableError) as error:
        Encoder("resnet18", weights="imagenet")
    message = str(error.value)
    assert "ImageNet weights of resnet18" in message
    assert "encoder.weights=PATH" in message and "encoder.weights=null" in message
    assert "Temporary failure" in message


def constant_ssim(x: float, y: float, data_range: float = 1.0) -> float:
    """SSIM of two constant images: no variance, so only the luminance term is left,
    ``(2 x y + C1) / (x^2 + y^2 + C1)`` with ``C1 = (0.01 data_range)^2``."""
    c1 = (0.01 * data_range) ** 2
    return (2 * x * y + c1) / (x**2 + y**2 + c1)


def test_losses_and_their_weighted_sum() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32)
    prediction = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    mse = ReconstructionLoss({"mse": 1.0})(prediction, target)
    l1 = ReconstructionLoss({"l1": 1.0})(prediction, target)
    ssim = ReconstructionLoss({"ssim": 1.0})(prediction, target)
    torch.testing.assert_close(mse, F.mse_loss(prediction, target))
    torch.testing.assert_close(l1, F.l1_loss(prediction, target))
    grey, lighter = torch.full((2, 3, 32, 32), 0.5), torch.full((2, 3, 32, 32), 0.6)
    constant = ReconstructionLoss({"ssim": 1.0})(lighter, grey)
    assert constant.item() == pytest.approx(1 - constant_ssim(0.6, 0.5), rel=1e-4)
    assert ReconstructionLoss({"ssim": 1.0})(target, target) == pytest.approx(0.0, abs=1e-5)
    combined = ReconstructionLoss({"mse": 1.0, "ssim": 0.5})(prediction, target)
    torch.testing.assert_close(combined, mse + 0.5 * ssim)
    with pytest.raises(ConfigError, match="mse, l1, ssim, perceptual"):
        ReconstructionLoss({"lpips": 1.0})


def test_metrics_are_computed_on_pixels() -> None:
    model = Autoencoder(Encoder("resnet18", weights=None, depth=2), latent_channels=4)
    target = torch.full((2, 3, 8, 8), 0.5)
    prediction = target + 0.1  # MSE 0.01 -> PSNR 20 dB, MAE 0.1
    model.test_metrics.update(prediction, target)
    values = model.test_metrics.compute()
    assert values["test/mse"] == pytest.approx(0.01, rel=1e-4)
    assert values["test/mae"] == pytest.approx(0.1, rel=1e-4)
    assert values["test/psnr"] == pytest.approx(20.0, rel=1e-4)
    assert values["test/ssim"] == pytest.approx(constant_ssim(0.6, 0.5), rel=1e-5)


def test_metrics_and_the_ssim_loss_are_fp32_under_bf16_autocast() -> None:
    """Under ``trainer.precision=bf16-mixed`` the test step runs in autocast; SSIM's filter
    in bf16 would read about 0.1 low, so the metrics and the SSIM term opt out of it."""
    torch.manual_seed(0)
    model = Autoencoder(Encoder("resnet18", weights=None, depth=2), latent_channels=4).eval()
    images = torch.rand(8, 3, 32, 32).clamp(0.05, 0.95)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reconstruction = model(images)
        model._step(images, model.test_metrics, "test")
        ssim_term = ReconstructionLoss({"ssim": 1.0})(images + 0.03, images)
    expected = _metrics("fp32/")
    expected.update(reconstruction.float().contiguous(), images)
    got, want = model.test_metrics.compute(), expected.compute()
    for name in ("mse", "psnr", "ssim"):
        assert got[f"test/{name}"] == pytest.approx(want[f"fp32/{name}"].item(), rel=1e-5)
    fp32_term = ReconstructionLoss({"ssim": 1.0})(images + 0.03, images)
    assert ssim_term.dtype == torch.float32
    assert ssim_term.item() == pytest.approx(fp32_term.item(), rel=1e-5)


@pytest.mark.slow  # torch.compile builds its kernels with the C++ compiler: about a minute
def test_a_compiled_forward_computes_the_same_with_the_same_weights() -> None:
    torch.manual_seed(0)
    plain = Autoencoder(Encoder("resnet18", weights=None, depth=2), latent_channels=4).eval()
    torch.manual_seed(0)
    compiled = Autoencoder(
        Encoder("resnet18", weights=None, depth=2), latent_channels=4, compile=True
    ).eval()
    assert list(plain.state_dict()) == list(compiled.state_dict())
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), plain(images), atol=1e-5, rtol=1e-4)
