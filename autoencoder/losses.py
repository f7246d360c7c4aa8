"""Reconstruction losses on [0, 1] pixels, combinable as weighted sums.

``model.loss`` gives every term a weight; terms at 0 are not computed. The config lists all
of them, so any can be set on the command line (``model.loss.perceptual=0.1``):

* ``mse``, ``l1``: pixel distances;
* ``ssim``: ``1 - SSIM`` (torchmetrics);
* ``perceptual``: the distance between the features of a frozen pretrained network for the
  reconstruction and for the original (the "feature loss" of Johnson et al. 2016); the model
  builds the network from ``model.perceptual``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from autoencoder.errors import ConfigError


def ssim_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM``, with the SSIM of torchmetrics on a [0, 1] data range, in fp32 under
    mixed precision too (in bf16 its local variances lose most of their digits)."""
    with torch.autocast(reconstruction.device.type, enabled=False):
        ssim = structural_similarity_index_measure(
            reconstruction.float(), target.float(), data_range=1.0
        )
    return 1.0 - ssim


PIXEL_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "ssim": ssim_loss}
TERMS = (*PIXEL_LOSSES, "perceptual")


class PerceptualLoss(nn.Module):
    """Mean squared distance between a frozen network's features of two images, averaged
    over the network's stages (each stage's distance is a mean over its features, so every
    stage counts alike whatever its size).

    ``build_network`` makes the network, a module with ``stage_outputs(images)`` (as
    :class:`~autoencoder.models.encoders.Encoder`), on first use (:meth:`network`). It is
    kept in eval mode with gradients off, and is not a submodule: it is a measuring
    instrument, not part of the model, so it never enters checkpoints, parameter groups or
    DDP.
    """

    def __init__(self, build_network: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.build_network = build_network
        self._network: tuple[nn.Module, ...] = ()
        self._device: torch.device | None = None

    def network(self, device: torch.device | None = None) -> nn.Module:
        """The feature network, built (and its weights loaded) on the first call."""
        if not self._network:
            net = self.build_network().eval()
            net.requires_grad_(False)
            self._network = (net,)
        net = self._network[0]
        if device is not None and device != self._device:
            net.to(device)
            self._device = device
        return net

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        net = self.network(reconstruction.device)
        with torch.no_grad():
            wanted = net.stage_outputs(target)
        got = net.stage_outputs(reconstruction)
        distances = [F.mse_loss(g.float(), w.float()) for g, w in zip(got, wanted, strict=True)]
        return torch.stack(distances).mean()


class ReconstructionLoss(nn.Module):
    """A weighted sum of named losses, e.g. ``{"mse": 1.0, "ssim": 0.1}``; terms of weight
    0 are left out.

    Args:
        weights: the weight of each term (see the module docstring for the terms).
        perceptual_network: builds the feature network of the ``perceptual`` term (see
            :class:`PerceptualLoss`); needed only when that term is used.
    """

    def __init__(
        self,
        weights: Mapping[str, float] = MappingProxyType({"mse": 1.0}),  # others 0
        perceptual_network: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(TERMS))
        if unknown:
            raise ConfigError(
                f"unknown loss term(s) {unknown}. Valid terms: {', '.join(TERMS)}; set e.g. "
                "model.loss.ssim=0.1."
            )
        self.weights = {name: float(weight) for name, weight in weights.items() if weight}
        if not self.weights:
            raise ConfigError(
                "model.loss has no terms of non-zero weight; set e.g. model.loss.mse=1."
            )
        self.perceptual = None
        if "perceptual" in self.weights:
            if perceptual_network is None:
                raise ConfigError("the perceptual loss term needs a feature network.")
            self.perceptual = PerceptualLoss(perceptual_network)

    def prepare(self) -> None:
        """Build what the terms need (the perceptual network and its weights) now, so a
        missing weights file is reported before training starts."""
        if self.perceptual is not None:
            self.perceptual.network()

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = reconstruction.new_zeros(())
        for name, weight in self.weights.items():
            term = PIXEL_LOSSES.get(name)
            value = (
                self.perceptual(reconstruction, target)
                if term is None
                else term(reconstruction, target)
            )
            total = total + weight * value
        return total
