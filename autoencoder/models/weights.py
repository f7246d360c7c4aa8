"""Pretrained weights for an encoder's backbone: torchvision's ImageNet weights, a state dict
file (a torchvision or timm checkpoint, or the weights ``scripts/pretrain_encoder.py``
saved, with the description beside it), or the encoder of a training run's checkpoint;
each checked against the encoder it loads into (architecture, keys, shapes, input
geometry), with a message that names the fix."""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from autoencoder.checkpointing import read_state_dict
from autoencoder.errors import ConfigError, ResourceUnavailableError, error_summary
from autoencoder.models.shape import EncoderGeometry, recorded_shape

# Checkpoint wrappers whose prefixes are stripped when loading a state dict file.
_KEY_PREFIXES = ("module.", "model.", "net.", "backbone.")
# The classifier head of a torchvision network, which an encoder never keeps: ResNet's
# ``avgpool`` and ``fc``, VGG's ``avgpool`` and ``classifier`` (its last layer
# ``classifier.6``).
HEAD_PREFIXES = ("avgpool.", "fc.", "classifier.")


def weights_info_path(weights: str | Path) -> Path:
    """Where ``scripts/pretrain_encoder.py`` describes a weights file: beside it, ``.json``."""
    return Path(weights).expanduser().with_suffix(".json")


def read_weights_info(weights: str | Path) -> dict[str, Any]:
    """What the pretraining job recorded about a weights file (its architecture, input
    geometry and class names); empty for a file without a description."""
    path = weights_info_path(weights)
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{path} (the description of {weights}) is not valid JSON: {error}."
        ) from None
    return info if isinstance(info, dict) else {}


def _check_pretrained_geometry(
    weights: str, geometry: EncoderGeometry, theirs: EncoderGeometry, described_by: str
) -> None:
    """Refuse weights pretrained with another input geometry than this encoder's: the
    pretrained stages would see objects at a scale they never learnt."""
    differing = geometry.geometry_differences(theirs)
    if differing:
        there = " ".join(f"encoder.{key}={str(getattr(theirs, key)).lower()}" for key in differing)
        here = " ".join(f"encoder.{key}={str(getattr(geometry, key)).lower()}" for key in differing)
        raise ConfigError(
            f"encoder.weights={weights} was pretrained with {there} ({described_by}), but "
            f"this run sets {here}. Set {there}, or pretrain with this geometry "
            "(scripts/pretrain_encoder.py and scripts/train.py take the same encoder options)."
        )


def load_weights(
    net: nn.Module,
    stages: Mapping[str, nn.Module],
    geometry: EncoderGeometry,
    weights: str,
    torchvision_name: str | None,
    translate: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Load ``encoder.weights`` into a freshly built backbone ``net`` (cut into ``stages``):
    torchvision's ImageNet weights of ``torchvision_name`` (``imagenet``), the encoder of a
    training run's checkpoint (:func:`load_run_encoder`), or a state dict file
    (:func:`load_backbone_state_dict`, its keys renamed by ``translate``); weights
    pretrained at another input geometry are refused."""
    name = geometry.name
    if weights == "imagenet":
        if torchvision_name is None:
            raise ConfigError(
                f"encoder {name} has no ImageNet weights in torchvision. Use "
                "encoder.weights=PATH (a state dict) or encoder.weights=null."
            )
        weights_enum = torchvision.models.get_model_weights(torchvision_name).DEFAULT
        try:
            state_dict = weights_enum.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as error:
            raise ResourceUnavailableError(
                f"could not download the ImageNet weights of {name} ({weights_enum.url}): "
                f"{error_summary(error)}. Either connect once so torchvision caches them, pass a "
                f"local state dict with encoder.weights=PATH (e.g. one made by "
                f"scripts/pretrain_encoder.py), or train from scratch with encoder.weights=null."
            ) from None
        load_backbone_state_dict(net, state_dict, source=weights_enum.url, name=name)
        return
    loaded = read_state_dict(
        weights,
        option="encoder.weights",
        hint="Use encoder.weights=imagenet, encoder.weights=null, the path to a state dict "
        "saved with torch.save, or a training run's checkpoint (its encoder is taken).",
    )
    run_shape = recorded_shape(loaded) if isinstance(loaded, Mapping) else None
    if run_shape is not None:
        _check_pretrained_geometry(weights, geometry, run_shape.encoder, "the run's checkpoint")
        load_run_encoder(stages, loaded["state_dict"], run_shape.encoder, geometry, weights)
        return
    info = read_weights_info(weights)
    if info:
        theirs = EncoderGeometry.from_json(info, name=name)
        _check_pretrained_geometry(weights, geometry, theirs, weights_info_path(weights).name)
    load_backbone_state_dict(net, loaded, source=weights, name=name, translate=translate)


RUN_ENCODER_PREFIX = "encoder.stages."


def load_run_encoder(
    stages: Mapping[str, nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    theirs: EncoderGeometry,
    geometry: EncoderGeometry,
    source: str,
) -> None:
    """Load the encoder of a training run's checkpoint (``encoder.weights=<run>.ckpt``; its
    ``state_dict``: with EMA, the average) into the first ``geometry.depth`` stages, strictly.

    The run must have trained the same network (``encoder.name``) at least as deep; its
    bottleneck and decoder are not read.
    """
    if theirs.name != geometry.name:
        raise ConfigError(
            f"encoder.weights={source} is a run of encoder {theirs.name}, but this run builds "
            f"{geometry.name}: set encoder={theirs.name}."
        )
    if theirs.depth is not None and geometry.depth is not None and theirs.depth < geometry.depth:
        raise ConfigError(
            f"encoder.weights={source} is a run whose encoder kept {theirs.depth} stages, but "
            f"this run sets encoder.depth={geometry.depth}: set encoder.depth={theirs.depth} "
            "or less (deeper stages were never trained there)."
        )
    kept = list(stages.items())[: geometry.depth]
    for stage_name, stage in kept:
        prefix = f"{RUN_ENCODER_PREFIX}{stage_name}."
        given = {
            key.removeprefix(prefix): value
            for key, value in state_dict.items()
            if key.startswith(prefix)
        }
        try:
            stage.load_state_dict(given, strict=True)
        except RuntimeError as error:
            raise ConfigError(
                f"encoder.weights={source}: stage {stage_name} of the run does not fit this "
                f"encoder ({error_summary(error)}). Set the encoder options of the run that "
                "wrote it (its .hydra/overrides.yaml)."
            ) from None


def load_backbone_state_dict(
    net: nn.Module,
    loaded: Mapping[str, object],
    source: str,
    name: str,
    translate: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Load the backbone part of a state dict into a torchvision model, strictly.

    Classifier heads (``fc``, ``classifier``) are ignored, so a classifier trained on any
    number of classes loads. Every other key must match by name and shape. ``translate``
    renames the keys first
    (:attr:`~autoencoder.models.encoder_spec.EncoderSpec.translate_state_dict`).
    """
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{source} does not hold a state dict (got {type(loaded).__name__}).")
    state_dict = {_strip_prefixes(key): value for key, value in loaded.items()}
    if translate is not None:
        state_dict = translate(net, state_dict)
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    given = {k: v for k, v in state_dict.items() if not k.startswith(HEAD_PREFIXES)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = sorted(
        k
        for k in set(expected) & set(given)
        if not isinstance(given[k], torch.Tensor) or given[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        problems = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                problems.append(f"{len(keys)} {label} keys: {shown}")
        raise ConfigError(
            f"{source} does not fit encoder {name}: " + "; ".join(problems) + ". Is it a "
            f"state dict of another architecture? Set encoder=NAME to the one it was saved "
            f"from (this run builds {name}), or use encoder.weights=imagenet / null."
        )
    net.load_state_dict(given, strict=False)


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _KEY_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key
