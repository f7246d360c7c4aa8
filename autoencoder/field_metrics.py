"""The field's perceptual metrics of reconstructions, through torchmetrics: LPIPS and rFID.

Tokenizer and latent-diffusion papers report them beside PSNR and SSIM. Their conventions
decide whether two figures compare, so :class:`FieldMetrics` fixes them and records them
with the scores (:meth:`FieldMetrics.conventions`):

- **LPIPS** (``LearnedPerceptualImagePatchSimilarity``): the network of ``lpips_net``
  (AlexNet, as the LPIPS paper's default), on [0, 1] images (``normalize=True``), resized to
  ``resize`` pixels a side first (bilinear, antialiased): at 32 px AlexNet's deepest
  feature maps vanish. Lower is better; identical images score 0.
- **rFID** (``FrechetInceptionDistance``): Inception-v3's 2048 pool features of the
  originals against those of their reconstructions, resized by the metric itself to 299
  pixels with ``antialias=False``, the resize of torch-fidelity and of published FIDs
  (torchmetrics 1.8 made antialiasing its default). FID depends on the number of images:
  a test set of 10,000 does not compare with the 50,000 images papers use on ImageNet.

Both need ImageNet-trained weights, downloaded once into the torch hub cache: offline, a
:class:`~autoencoder.errors.ResourceUnavailableError` names the file and where to put it.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from autoencoder.errors import ConfigError, ResourceUnavailableError, error_summary

FIELD_METRICS = ("lpips", "fid")
LpipsNet = Literal["alex", "vgg", "squeeze"]
# torchvision's weights files of LPIPS' networks (the torch hub cache's checkpoints/ folder)
LPIPS_WEIGHTS = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
FID_FEATURES = 2048


class FieldMetrics:
    """LPIPS and/or rFID of reconstructions against their originals, batch by batch.

    Args:
        names: the metrics to compute, among :data:`FIELD_METRICS`.
        lpips_net: LPIPS' network.
        resize: the side LPIPS' inputs are resized to.
        fid_weights_path: a local copy of torch-fidelity's Inception-v3 weights
            (``pt_inception-2015-12-05-6726825d.pth``); ``None`` downloads them once.
        fid_feature: a feature extractor to use instead of Inception-v3 (a module mapping
            uint8 images to ``(N, d)`` features), e.g. for tests.
        device: where the metrics' networks run.
    """

    def __init__(
        self,
        names: Sequence[str],
        lpips_net: LpipsNet = "alex",
        resize: int = 224,
        fid_weights_path: str | None = None,
        fid_feature: nn.Module | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        unknown = [name for name in names if name not in FIELD_METRICS]
        if unknown:
            raise ConfigError(
                f"metrics={list(names)}: unknown {', '.join(unknown)}; use any of "
                f"{', '.join(FIELD_METRICS)}, e.g. metrics=[lpips,fid]."
            )
        self.lpips_net, self.resize = lpips_net, resize
        self.fid_weights_path = fid_weights_path
        self.metrics: dict[str, Metric] = {}
        if "lpips" in names:
            self.metrics["lpips"] = _lpips(lpips_net).to(device)
        if "fid" in names:
            self.metrics["fid"] = _fid(fid_weights_path, fid_feature).to(device)

    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor) -> None:
        """Add a batch of [0, 1] images and their reconstructions."""
        if "lpips" in self.metrics:
            self.metrics["lpips"].update(self._resized(reconstructions), self._resized(originals))
        if "fid" in self.metrics:
            self.metrics["fid"].update(_to_uint8(originals), real=True)
            self.metrics["fid"].update(_to_uint8(reconstructions), real=False)

    def compute(self) -> dict[str, float]:
        """``test/lpips`` and ``test/fid`` over every batch added."""
        return {f"test/{name}": float(metric.compute()) for name, metric in self.metrics.items()}

    def conventions(self) -> dict[str, Any]:
        """How the scores were computed, for the record beside them."""
        described: dict[str, Any] = {}
        if "lpips" in self.metrics:
            described["lpips"] = {
                "net": self.lpips_net,
                "input": "[0, 1] RGB (normalize=True)",
                "resize": f"{self.resize} x {self.resize}, bilinear, antialiased",
            }
        if "fid" in self.metrics:
            described["fid"] = {
                "features": f"Inception-v3 pool, {FID_FEATURES}",
                "resize": "299 x 299 by the metric, antialias=False (torch-fidelity's)",
                "real": "the originals; fake: their reconstructions",
                "note": "depends on the number of images: compare only at equal counts",
            }
        return described

    def _resized(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.resize and images.shape[-2] == self.resize:
            return images.float().clamp(0, 1)
        size = (self.resize, self.resize)
        resized = F.interpolate(images.float(), size, mode="bilinear", antialias=True)
        return resized.clamp(0, 1)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _lpips(net: str) -> Metric:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    if net not in LPIPS_WEIGHTS:
        raise ConfigError(f"lpips.net={net!r}: use alex, vgg or squeeze.")
    try:
        return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise ResourceUnavailableError(
            f"LPIPS needs torchvision's ImageNet weights of its network ({LPIPS_WEIGHTS[net]}) "
            f"and could not download them ({error_summary(error)}). Connect once, or put "
            f"the file into {torch.hub.get_dir()}/checkpoints/ (the torch hub cache; "
            "TORCH_HOME moves it)."
        ) from None


def _fid(weights_path: str | None, feature: nn.Module | None) -> Metric:
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is not None:
        return FrechetInceptionDistance(feature=feature, normalize=False)
    try:
        return FrechetInceptionDistance(
            feature=FID_FEATURES,
            feature_extractor_weights_path=weights_path,
            antialias=False,
        )
    except ModuleNotFoundError:
        raise ConfigError(
            "metrics=[fid] needs torch-fidelity (Inception-v3 as FID defines it): "
            'pip install -e ".[image]" (or pip install torch-fidelity).'
        ) from None
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise ResourceUnavailableError(
            "rFID needs torch-fidelity's Inception-v3 weights "
            f"(pt_inception-2015-12-05-6726825d.pth) and could not get them "
            f"({error_summary(error)}). Connect once (they go to {torch.hub.get_dir()}/"
            "checkpoints/), or download them elsewhere and pass fid.weights_path=PATH."
        ) from None
