"""The encoder: a pretrained backbone from the encoder table, cut into named stages.

An :class:`Encoder` owns everything a decoder and a fine-tuning policy need to know:

* ``stages``: an ordered ``ModuleDict`` of layer groups, lowest first (ResNet: ``stem``,
  ``layer1`` .. ``layer4``; VGG: ``block1`` .. ``block5``, the runs between max-pools);
* ``out_channels`` and ``reductions``: channels and total downsampling after each stage;
* input normalisation: images come in as [0, 1] pixels and are normalised with the
  ImageNet statistics (a timm model's own) inside :meth:`Encoder.forward`;
* freezing: which stages are trainable, and which BatchNorm layers stay in eval mode;
* its weights, loaded into the backbone before it is cut (:mod:`autoencoder.models.weights`).

Which backbones exist is the table of :mod:`autoencoder.models.registry` (its
:data:`ENCODERS` and :func:`register_encoder` are importable from here too); what a family
declares is :mod:`autoencoder.models.encoder_spec`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.nn import functional as F

from autoencoder.errors import ConfigError
from autoencoder.models.encoder_spec import StageInfo
from autoencoder.models.registry import ENCODERS as ENCODERS
from autoencoder.models.registry import check_encoder_name
from autoencoder.models.registry import register_encoder as register_encoder
from autoencoder.models.shape import EncoderGeometry
from autoencoder.models.weights import load_weights

# BatchNorm of a stage while the model trains: pretrained statistics, or batch statistics.
BatchNormMode = Literal["eval", "train"]
# The layers that keep running statistics, and their subclasses (timm's BatchNormAct2d):
# torch's public BatchNorm classes, whose private base torch does not export.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _main_path(stage: nn.Module) -> list[nn.Module]:
    """Convs and pools of a stage in order, without ResNet shortcut (downsample) convs."""
    shortcut = {
        id(m)
        for block in stage.modules()
        if getattr(block, "downsample", None) is not None
        for m in block.downsample.modules()
    }
    return [
        m
        for m in stage.modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and id(m) not in shortcut
    ]


INPUT_SCALES = (1, 2, 4, 8)


def check_input_scale(input_scale: int) -> None:
    if input_scale not in INPUT_SCALES:
        raise ConfigError(f"encoder.input_scale must be 1, 2, 4 or 8, got {input_scale}.")


def check_patch_scale(name: str, input_scale: int, patch_size: int) -> None:
    """A vision transformer's ``input_scale`` must divide its patch size: each token then
    covers ``patch_size / input_scale`` pixels of the original image."""
    if input_scale < 1 or patch_size % input_scale:
        divisors = [str(d) for d in range(1, patch_size + 1) if patch_size % d == 0]
        raise ConfigError(
            f"encoder.input_scale={input_scale}: {name} cuts images into {patch_size} px "
            f"patches, so the scale must divide {patch_size} ({', '.join(divisors)}): one "
            f"latent position per {patch_size} / input_scale pixels of the original image."
        )


def scale_input(images: torch.Tensor, input_scale: int) -> torch.Tensor:
    """Resize (normalised) images up by ``input_scale``, bilinearly."""
    if input_scale == 1:
        return images
    return F.interpolate(images, scale_factor=input_scale, mode="bilinear", align_corners=False)


def _first_max_pool(module: nn.Module) -> tuple[nn.Module, str, nn.MaxPool2d] | None:
    """The first max-pool of ``module`` in registration order, with its parent and name."""
    for parent in module.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                return parent, child_name, child
    return None


def remove_stem_pool(name: str, stages: Sequence[nn.Module]) -> tuple[int, int]:
    """Replace the stem's max-pool by the identity (``encoder.stem_pool=false``) and return
    the index of its stage and its stride.

    The stem's max-pool is the first stage's first max-pool or, where the first stage ends
    before it, a max-pool that the second stage starts with: timm's ResNets are tapped after
    the stem's activation, at 2x, so their max-pool opens the stage of ``layer1``. A whole
    network passed as the only stage (a classifier's) loses its first max-pool.
    """
    found = _first_max_pool(stages[0])
    index = 0
    second = stages[1] if len(stages) > 1 else None
    if found is None and isinstance(second, nn.Sequential) and len(second) > 0:
        child_name, child = next(iter(second.named_children()))
        if isinstance(child, nn.MaxPool2d):
            found, index = (second, child_name, child), 1
    if found is None:
        raise ConfigError(
            f"encoder.stem_pool=false: {name} has no max-pool in its stem to remove (none in "
            "its first stage, none opening its second). Use encoder.stem_pool=true."
        )
    parent, child_name, pool = found
    setattr(parent, child_name, nn.Identity())
    return index, _stride(pool)


def _stride(module: nn.Conv2d | nn.MaxPool2d) -> int:
    return module.stride if isinstance(module.stride, int) else module.stride[0]


def _read_stage_info(stages: nn.ModuleDict) -> list[StageInfo]:
    """Each stage's channels and total downsampling, from the convs and pools of its main
    path (without ResNet shortcuts)."""
    infos = []
    reduction = 1
    for stage in stages.values():
        path = _main_path(stage)
        for module in path:
            reduction *= _stride(module)
        channels = [m for m in path if isinstance(m, nn.Conv2d)][-1].out_channels
        infos.append(StageInfo(channels, reduction))
    return infos


def _declared_stage_info(
    name: str,
    declared: Sequence[StageInfo],
    stages: nn.ModuleDict,
    removed_pool: tuple[int, int] | None,
    feature_map: nn.Module,
) -> list[StageInfo]:
    """The stages' channels and downsampling as their family declares them, without the
    stem's max-pool when it was removed (``removed_pool``: its stage index and stride),
    checked on a dummy image: a declaration that does not describe the stages would build a
    wrong decoder."""
    if len(declared) < len(stages):
        raise ConfigError(
            f"encoder {name} declares the channels and downsampling of {len(declared)} stages "
            f"but has {len(stages)}: fix the family's registration (its stage_info)."
        )
    infos = [
        StageInfo(info.channels, info.reduction // removed_pool[1])
        if removed_pool is not None and index >= removed_pool[0]
        else info
        for index, info in enumerate(declared[: len(stages)])
    ]
    side = infos[-1].reduction * max(2, 32 // infos[-1].reduction)
    features = torch.zeros(1, 3, side, side)
    training = stages.training
    stages.eval()
    with torch.no_grad():
        for (stage_name, stage), info in zip(stages.items(), infos, strict=True):
            features = stage(features)
            shape = tuple(feature_map(features).shape[1:])
            expected = (info.channels, side // info.reduction, side // info.reduction)
            if shape != expected:
                raise ConfigError(
                    f"encoder {name}: stage {stage_name} is declared to give {info.channels} "
                    f"channels at {info.reduction}x downsampling, but on a {side} px image it "
                    f"gives {' x '.join(map(str, shape))}. Its stage_info does not "
                    "describe its stages: fix the family's registration."
                )
    stages.train(training)
    return infos


class Encoder(nn.Module):
    """A torchvision ResNet or VGG (or timm) feature extractor, cut into named stages; a
    vision transformer's stages pass tokens, which :attr:`feature_map` lays out on their
    grid (:mod:`autoencoder.models.vit_encoders`).

    Args:
        name: an entry of :data:`ENCODERS` (the torchvision model names of every ResNet and
            VGG, and whatever :func:`register_encoder` added), or ``timm/MODEL`` for timm's
            MODEL (:mod:`autoencoder.models.timm_encoders`).
        weights: ``"imagenet"`` for torchvision's (timm's) default weights of that model
            (downloaded on first use, then cached), ``None`` for random initialisation, or a
            path to a local state dict (a torchvision or timm checkpoint, or one this project
            saved).
        depth: how many stages to keep, 1 .. 5 (``None`` keeps all of them).
        normalize: normalise [0, 1] inputs with the ImageNet mean and std (a timm model's
            own).
        stem_pool: keep the first stage's max-pool (ResNet: the stem's; VGG: ``block1``'s;
            timm's ResNets: the one opening ``stage2``). ``False`` halves the downsampling of
            every stage from there on, so a deep cut keeps twice the resolution on small
            images, at about 4x the cost of the stages after it; the weights are unchanged (a
            max-pool has none).
        input_scale: resize the normalised images up by this factor (bilinear) before the
            first stage, so pretrained stages see objects nearer the scale they were trained
            at and a deep cut keeps resolution; costs about ``input_scale**2`` in the
            encoder. :attr:`reductions` count from the original image, and the decoder ends
            at the original size. 1, 2, 4 or 8; a vision transformer's divides its patch
            size (its ``stem_pool=False`` is ignored, with a note).
    """

    def __init__(
        self,
        name: str = "resnet18",
        weights: str | None = "imagenet",
        depth: int | None = None,
        normalize: bool = True,
        stem_pool: bool = True,
        input_scale: int = 1,
    ) -> None:
        super().__init__()
        spec = check_encoder_name(name)
        self.name = name
        self.tokens = spec.feature_map is not None
        if self.tokens and not stem_pool:  # the experiments' layout sets it for CNNs
            rank_zero_info(
                f"note: encoder.stem_pool=false ignored: {name} is a vision transformer, "
                "without a max-pool; encoder.input_scale sets its grid of tokens."
            )
            stem_pool = True
        builds_pretrained = weights == "imagenet" and spec.pretrained is not None
        net = spec.pretrained() if builds_pretrained else spec.build()
        stages = spec.stages(net)
        if depth is None:
            depth = len(stages)
        if not 1 <= depth <= len(stages):
            raise ConfigError(
                f"encoder.depth={depth} is out of range for {name}: it has {len(stages)} "
                f"stages ({', '.join(stages)}). Use 1 .. {len(stages)}."
            )
        geometry = EncoderGeometry(name, depth, stem_pool, input_scale)
        if weights is not None and not builds_pretrained:
            load_weights(
                net, stages, geometry, weights, spec.torchvision_name, spec.translate_state_dict
            )
        # a vision transformer's stages pass tokens; this lays them out as a feature map
        self.feature_map = nn.Identity() if spec.feature_map is None else spec.feature_map(net)
        removed_pool = None if stem_pool else remove_stem_pool(name, list(stages.values()))
        self.depth = depth
        self.stages = nn.ModuleDict(list(stages.items())[:depth])
        self.stem_pool = stem_pool
        self.input_scale = input_scale
        if spec.stage_info is None:
            stage_infos = _read_stage_info(self.stages)
        else:
            declared = spec.stage_info(net)
            stage_infos = _declared_stage_info(
                name, declared, self.stages, removed_pool, self.feature_map
            )
        if self.tokens:
            check_patch_scale(name, input_scale, stage_infos[0].reduction)
        else:
            check_input_scale(input_scale)
        self.out_channels = [info.channels for info in stage_infos]
        self.reductions: list[int] = []
        for stage_name, info in zip(self.stages, stage_infos, strict=True):
            reduction = info.reduction
            if reduction % input_scale:
                raise ConfigError(
                    f"encoder.input_scale={input_scale} is larger than the downsampling of "
                    f"{name}'s first stages ({reduction}x up to {stage_name}): the decoder "
                    "could not end at the input's size. Use "
                    f"encoder.input_scale={math.gcd(reduction, input_scale)} or keep the stem's "
                    "max-pool (encoder.stem_pool=true)."
                )
            self.reductions.append(reduction // input_scale)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), False)
        self._frozen: set[str] = set()
        self._bn_eval: set[str] = set()
        self._bn_noted = False

    @property
    def stage_names(self) -> list[str]:
        return list(self.stages.keys())

    @property
    def geometry(self) -> EncoderGeometry:
        """The network, its cut and its input geometry (the encoder part of the model's
        shape)."""
        return EncoderGeometry(self.name, self.depth, self.stem_pool, self.input_scale)

    @property
    def reduction(self) -> int:
        """Total downsampling between the input and the last kept stage."""
        return self.reductions[-1]

    def set_trainable(
        self, num_trainable: int, frozen_bn: BatchNormMode, unfrozen_bn: BatchNormMode
    ) -> None:
        """Make the top ``num_trainable`` stages trainable and freeze the rest.

        Frozen stages get ``requires_grad=False`` and run under ``torch.no_grad()``, so no
        backward pass goes through them. Freezing is always bottom-up: the frozen stages are
        a prefix, so cutting the graph below the first trainable stage loses nothing.

        Args:
            num_trainable: how many stages, counted from the top, learn.
            frozen_bn: the BatchNorm of frozen stages in training mode: ``eval`` keeps the
                pretrained running statistics, ``train`` uses batch statistics.
            unfrozen_bn: the same for the BatchNorm of trainable stages.
        """
        if not 0 <= num_trainable <= len(self.stages):
            raise ConfigError(f"num_trainable={num_trainable} must be in 0 .. {len(self.stages)}")
        self._note_without_batchnorm(frozen_bn, unfrozen_bn)
        num_frozen = len(self.stages) - num_trainable
        self._frozen = set(self.stage_names[:num_frozen])
        self._bn_eval = set()
        for index, (name, stage) in enumerate(self.stages.items()):
            frozen = index < num_frozen
            stage.requires_grad_(not frozen)
            if (frozen_bn if frozen else unfrozen_bn) == "eval":
                self._bn_eval.add(name)
        self.train(self.training)

    def _note_without_batchnorm(self, frozen_bn: BatchNormMode, unfrozen_bn: BatchNormMode) -> None:
        """One line, once, when a BatchNorm setting asks for batch statistics of an encoder
        without BatchNorm (a vision transformer's, ConvNeXt's LayerNorm): it does nothing."""
        asked = [
            f"finetune.{key}=train"
            for key, mode in (("frozen_bn", frozen_bn), ("unfrozen_bn", unfrozen_bn))
            if mode == "train"
        ]
        if (
            not asked
            or self._bn_noted
            or any(isinstance(m, BATCH_NORMS) for m in self.stages.modules())
        ):
            return
        self._bn_noted = True
        rank_zero_info(
            f"note: {' and '.join(asked)} ignored: encoder {self.name} has no BatchNorm layers."
        )

    def train(self, mode: bool = True) -> Encoder:
        """Set train/eval mode; BatchNorm chosen by :meth:`set_trainable` stays in eval."""
        super().train(mode)
        for name in self._bn_eval:
            for module in self.stages[name].modules():
                if isinstance(module, BATCH_NORMS):
                    module.eval()
        return self

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std if self.normalize else images
        return scale_input(x, self.input_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self._prepare(images)
        for name, stage in self.stages.items():
            if name in self._frozen:
                with torch.no_grad():
                    x = stage(x)
            else:
                x = stage(x)
        return self.feature_map(x)

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage as a feature map, lowest first, as a feature extractor
        (for a feature loss): no freezing logic, gradients flow back to ``images``."""
        x = self._prepare(images)
        outputs = []
        for stage in self.stages.values():
            x = stage(x)
            outputs.append(self.feature_map(x))
        return outputs
