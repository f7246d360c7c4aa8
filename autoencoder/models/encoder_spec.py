"""What an encoder family declares: the types every family (torchvision's, timm's, one a
user registers) builds its table entries from, and nothing that depends on a family.

The families import this module, :mod:`autoencoder.models.registry` joins them into one
table, and :class:`~autoencoder.models.encoders.Encoder` builds a network from an entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# encoder.name=timm/MODEL builds timm's MODEL (autoencoder.models.timm_encoders).
TIMM_PREFIX = "timm/"


@dataclass(frozen=True)
class StageInfo:
    """One stage's output as its family declares it, as timm's ``FeatureInfo`` does: its
    channels, and the total downsampling from the input with every max-pool in place."""

    channels: int
    reduction: int


@dataclass(frozen=True)
class EncoderSpec:
    """One entry of the encoder table.

    Attributes:
        build: returns the randomly initialised network; its state dict uses the key names
            of the weight files it should load (torchvision's, for torchvision models).
        stages: cuts that network into an ordered dict of stages, lowest first; every stage
            maps a feature map to the next, and their order is the order of the forward pass.
        torchvision_name: the torchvision classification model this backbone comes from:
            its ImageNet weights load with ``weights="imagenet"``, and pretraining
            (``scripts/pretrain_encoder.py``) trains it as a classifier. ``None`` for a
            backbone torchvision does not have.
        stage_info: declares each stage's channels and downsampling, for a family whose
            stages the convs and pools do not tell (strided convs in downsampling layers,
            pooled shortcuts); the encoder checks them on a dummy image. ``None``: read from
            the convs and pools of each stage's main path.
        pretrained: builds the network with its pretrained weights (``weights="imagenet"``)
            for a family that loads them itself (timm's, from the Hugging Face hub). ``None``:
            ``build()``, then torchvision's weights of ``torchvision_name``.
        translate_state_dict: renames the keys of a loaded state dict (``weights=PATH``) to
            the network's, for a family whose weight files use other names (a timm
            classifier's, which its features model flattens); it drops the keys of modules
            the network does not hold (the classifier head). ``None``: the network's names.
        mean, std: the input normalisation its weights were trained with.
        feature_map: builds a module without weights that turns a stage's output into a
            feature map (B, C, H, W), for a family whose stages pass something else between
            them: a vision transformer's tokens with their grid
            (:mod:`autoencoder.models.vit_encoders`), whose first stage cuts the image into
            patches of its downsampling. ``None``: the stages give feature maps.
    """

    build: Callable[[], nn.Module]
    stages: Callable[[nn.Module], OrderedDict[str, nn.Module]]
    torchvision_name: str | None = None
    stage_info: Callable[[nn.Module], list[StageInfo]] | None = None
    pretrained: Callable[[], nn.Module] | None = None
    translate_state_dict: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    feature_map: Callable[[nn.Module], nn.Module] | None = None
