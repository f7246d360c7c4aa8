"""timm models as encoders: ``encoder.name=timm/MODEL`` (the ``timm`` extra).

timm builds a convolutional model as a features model (``features_only=True``) whose
``feature_info`` names, for each feature map, the module it is taken after, with its channels
and downsampling. Most families are a ``FeatureListNet``, which holds the network's modules in
forward order (a Sequential container flattened one level, ``stages.0`` as ``stages_0``) and
runs them one after the other; EfficientNet and MobileNet have classes of their own that run
their stem and blocks in the same way. Stage ``i`` (``stage1`` .. ``stageN``) is the run of
modules after feature ``i - 1``'s module through feature ``i``'s, so the stages partition the
network: every parameter is in exactly one stage. The split is checked against timm's own
forward pass on a random image; a family whose feature maps are not the outputs of such a
run (models tapped with hooks, HRNet's parallel branches) is refused with a
:class:`~autoencoder.errors.ConfigError` that names it.

Vision transformers (timm's ``vision_transformer`` and ``deit`` modules: ViT, DINOv2, MAE,
SigLIP, CLIP, ...) are built whole, without their head, and cut into an embedding stage and
groups of blocks by :mod:`autoencoder.models.vit_encoders`.

timm is imported only when a ``timm/`` name is asked for
(:func:`~autoencoder.models.registry.check_encoder_name`), since importing it takes seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import torch
from torch import nn

from autoencoder.errors import ConfigError, ResourceUnavailableError, error_summary
from autoencoder.models.encoder_spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TIMM_PREFIX,
    EncoderSpec,
    StageInfo,
)
from autoencoder.models.vit_encoders import (
    create_vit,
    is_vit_name,
    token_grid,
    vit_stage_info,
    vit_stages,
)

INSTALL_HINT = "pip install -e '.[timm]' (or pip install 'timm>=1.0')"


def import_timm() -> ModuleType:
    """The ``timm`` package; a :class:`ConfigError` saying how to install it if missing."""
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"encoder.name={TIMM_PREFIX}...: timm encoders need the timm extra: {INSTALL_HINT}."
        ) from None
    return timm


def timm_encoder_spec(model_name: str) -> EncoderSpec:
    """The encoder table entry of timm's ``model_name``: an architecture (``convnext_atto``),
    optionally with the tag of its pretrained weights (``resnet18d.ra2_in1k``)."""
    timm = import_timm()
    if not timm.is_model(model_name):
        raise ConfigError(
            f"unknown timm model {model_name!r} (encoder.name={TIMM_PREFIX}{model_name}). "
            "List timm's names with python -c \"import timm; print(timm.list_models('resnet*'))\"."
        )
    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as error:  # an architecture that exists with a tag that does not
        architecture = timm.models.get_arch_name(model_name)
        raise ConfigError(
            f"encoder.name={TIMM_PREFIX}{model_name}: {error_summary(error)}. List its tags "
            f"with python -c \"import timm; print(timm.list_pretrained('{architecture}.*'))\"."
        ) from None
    mean = getattr(pretrained_cfg, "mean", None) or IMAGENET_MEAN
    std = getattr(pretrained_cfg, "std", None) or IMAGENET_STD
    if is_vit_name(timm, model_name):
        return EncoderSpec(
            build=partial(create_vit, timm, model_name, pretrained=False),
            stages=partial(_vit_stages, model_name),
            stage_info=vit_stage_info,
            pretrained=partial(
                _create_pretrained, timm, model_name, pretrained_cfg, partial(create_vit, timm)
            ),
            translate_state_dict=translate_state_dict,
            mean=tuple(mean),
            std=tuple(std),
            feature_map=token_grid,
        )
    return EncoderSpec(
        build=partial(_create, timm, model_name, pretrained=False),
        stages=partial(_stages, timm, model_name),
        stage_info=_stage_info,
        pretrained=partial(_create_pretrained, timm, model_name, pretrained_cfg),
        translate_state_dict=translate_state_dict,
        mean=tuple(mean),
        std=tuple(std),
    )


def _family(timm: ModuleType, model_name: str) -> str:
    """The timm module that defines the architecture (``resnet``, ``vision_transformer``)."""
    entrypoint = timm.models.model_entrypoint(timm.models.get_arch_name(model_name))
    return entrypoint.__module__.rpartition(".")[2]


def _create(timm: ModuleType, model_name: str, pretrained: bool) -> nn.Module:
    try:
        return timm.create_model(model_name, pretrained=pretrained, features_only=True)
    except (RuntimeError, AssertionError) as error:
        raise ConfigError(
            f"encoder.name={TIMM_PREFIX}{model_name}: timm cannot build it as a features model "
            f"({error_summary(error)}); timm's {_family(timm, model_name)} family does not "
            "give feature maps here. Use a convolutional family (resnet, convnext, "
            "efficientnet, regnet, ...)."
        ) from None


def _vit_stages(model_name: str, net: nn.Module) -> OrderedDict[str, nn.Module]:
    return vit_stages(net, model_name)


def _create_pretrained(
    timm: ModuleType,
    model_name: str,
    pretrained_cfg: Any,
    create: Callable[..., nn.Module] | None = None,
) -> nn.Module:
    """The features model (``create``'s network) with timm's pretrained weights, downloaded
    from the Hugging Face hub on first use (then cached)."""
    source = pretrained_cfg and (
        pretrained_cfg.hf_hub_id or pretrained_cfg.url or pretrained_cfg.file
    )
    if not source:
        raise ConfigError(
            f"encoder.weights=imagenet: timm has no pretrained weights for {model_name}. Use "
            "encoder.weights=PATH (a state dict) or encoder.weights=null."
        )
    where = (
        f"{pretrained_cfg.hf_hub_id} on the Hugging Face hub"
        if pretrained_cfg.hf_hub_id
        else source
    )
    try:
        if create is not None:
            return create(model_name, pretrained=True)
        return _create(timm, model_name, pretrained=True)
    except OSError as error:  # the hub's and urllib's download errors are OSErrors
        raise ResourceUnavailableError(
            f"could not download the pretrained weights of {TIMM_PREFIX}{model_name} ({where}): "
            f"{error_summary(error)}. Either connect once so timm caches them (HF_HUB_OFFLINE=1 "
            "then reads the cache without the network), pass a local state dict with "
            "encoder.weights=PATH, or train from scratch with encoder.weights=null."
        ) from None


def _forward_modules(
    timm: ModuleType, net: nn.Module
) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The modules of a features model in the order its forward pass runs them, and the
    names of those after which it takes a feature map."""
    if isinstance(net, timm.models.FeatureDictNet):  # and FeatureListNet
        return list(net.items()), list(net.return_layers)
    modules: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if isinstance(child, nn.Sequential):
            modules += [(f"{name}_{inner}", module) for inner, module in child.named_children()]
        else:
            modules.append((name, child))
    return modules, [name.replace(".", "_") for name in net.feature_info.module_name()]


def _not_sequential(timm: ModuleType, model_name: str, reason: str) -> ConfigError:
    return ConfigError(
        f"encoder.name={TIMM_PREFIX}{model_name}: timm's {_family(timm, model_name)} family "
        f"cannot be cut into sequential stages: {reason}. Use a convolutional family whose "
        "features model runs its modules in turn (resnet, convnext, efficientnet, regnet, ...) "
        "or a ViT of timm's vision_transformer module (vit_*, *_dinov2, *_siglip_*, ...)."
    )


def _stages(timm: ModuleType, model_name: str, net: nn.Module) -> OrderedDict[str, nn.Module]:
    """Cut a features model into ``stage1`` .. ``stageN``, one per feature map, lowest
    first, each the run of modules up to the one its feature map is taken after."""
    modules, taps = _forward_modules(timm, net)
    names = [name for name, _ in modules]
    timm_names = net.feature_info.module_name()
    inside = [
        timm_name for tap, timm_name in zip(taps, timm_names, strict=True) if tap not in names
    ]
    if inside:
        raise _not_sequential(
            timm, model_name, f"its feature maps are taken inside modules ({', '.join(inside)})"
        )
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    start = 0
    for tap, timm_name in zip(taps, timm_names, strict=True):
        end = names.index(tap) + 1
        if end <= start:
            raise _not_sequential(
                timm, model_name, f"its feature map at {timm_name} comes before the one below it"
            )
        stages[f"stage{len(stages) + 1}"] = nn.Sequential(OrderedDict(modules[start:end]))
        start = end
    owned = [id(p) for stage in stages.values() for p in stage.parameters()]
    if len(owned) != len(set(owned)) or set(owned) != {id(p) for p in net.parameters()}:
        raise _not_sequential(
            timm, model_name, "its parameters are not held once each by the modules it runs"
        )
    _check_forward(timm, model_name, net, stages)
    return stages


def _check_forward(
    timm: ModuleType, model_name: str, net: nn.Module, stages: OrderedDict[str, nn.Module]
) -> None:
    """The stages, run one after the other, must give timm's feature maps."""
    side = 2 * max(net.feature_info.reduction())
    images = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    net.eval()
    try:
        with torch.no_grad():
            expected = net(images)
            features = images
            for (stage_name, stage), feature in zip(stages.items(), expected, strict=True):
                features = stage(features)
                if features.shape != feature.shape or not torch.allclose(features, feature):
                    raise _not_sequential(
                        timm, model_name, f"{stage_name} does not give timm's feature map"
                    )
    except (RuntimeError, AssertionError) as error:
        raise ConfigError(
            f"encoder.name={TIMM_PREFIX}{model_name}: it does not run on a {side} x {side} "
            f"image ({error_summary(error)}). Use a convolutional family that takes any image "
            "size (resnet, convnext, efficientnet, regnet, ...)."
        ) from None
    finally:
        net.train()


def _stage_info(net: nn.Module) -> list[StageInfo]:
    info = net.feature_info
    return [StageInfo(c, r) for c, r in zip(info.channels(), info.reduction(), strict=True)]


def translate_state_dict(net: nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """A timm state dict in the features model's key names.

    Takes a full timm model's keys (``stages.0.blocks.0...``: a timm classifier's file) or
    the features model's own (``stages_0.blocks.0...``). Keys of the modules the features
    model leaves out, those after its last feature map (the classifier ``head``, ``fc``,
    EfficientNet's ``conv_head``), are dropped; every other key is kept, so a key of the
    kept modules that does not fit is reported, not ignored.
    """
    expected = set(net.state_dict())
    kept_modules = {key.split(".")[0] for key in expected}
    translated = {}
    for key, value in state_dict.items():
        first, _, rest = key.partition(".")
        flattened = f"{first}_{rest}"  # a module of a Sequential the features model flattened
        if key not in expected and flattened in expected:
            translated[flattened] = value
        elif key in expected or any(
            module == first or module.startswith(f"{first}_") for module in kept_modules
        ):
            translated[key] = value
    return translated
