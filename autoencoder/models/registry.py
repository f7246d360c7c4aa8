"""The encoder table: which backbones exist, joined from their families.

:data:`ENCODERS` starts with torchvision's ResNets and VGGs
(:mod:`autoencoder.models.torchvision_encoders`); :func:`register_encoder` adds a family
member of a user's module. Names with the ``timm/`` prefix (``timm/convnext_atto``) are not
in the table: :func:`check_encoder_name` resolves them through
:mod:`autoencoder.models.timm_encoders`, which it imports only then, since importing timm
takes seconds and timm is an optional extra.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from autoencoder.errors import ConfigError
from autoencoder.models.encoder_spec import TIMM_PREFIX, EncoderSpec, StageInfo
from autoencoder.models.torchvision_encoders import TORCHVISION_ENCODERS

ENCODERS: dict[str, EncoderSpec] = dict(TORCHVISION_ENCODERS)


def register_encoder(
    name: str,
    build: Callable[[], nn.Module],
    stages: Callable[[nn.Module], OrderedDict[str, nn.Module]],
    torchvision_name: str | None = None,
    stage_info: Callable[[nn.Module], list[StageInfo]] | None = None,
) -> None:
    """Add a backbone family member to :data:`ENCODERS` (see
    :class:`~autoencoder.models.encoder_spec.EncoderSpec`); then ``encoder.name=NAME``
    builds it."""
    if name.startswith(TIMM_PREFIX):
        raise ConfigError(
            f"cannot register {name!r}: names starting with {TIMM_PREFIX!r} are timm's models."
        )
    if name in ENCODERS:
        raise ConfigError(f"an encoder named {name!r} is already registered.")
    ENCODERS[name] = EncoderSpec(build, stages, torchvision_name, stage_info)


def check_encoder_name(name: str) -> EncoderSpec:
    """The table entry of ``name`` (a timm model's for ``timm/MODEL``); a
    :class:`ConfigError` listing the valid names if none."""
    if name.startswith(TIMM_PREFIX):
        # Imported here, so that only a timm encoder pays for importing timm.
        from autoencoder.models.timm_encoders import timm_encoder_spec

        return timm_encoder_spec(name.removeprefix(TIMM_PREFIX))
    if name not in ENCODERS:
        raise ConfigError(
            f"unknown encoder {name!r}. Valid names: {', '.join(ENCODERS)}, or "
            f"{TIMM_PREFIX}MODEL for a timm model (set encoder=NAME; an encoder registered in "
            "a module of your own needs imports=[MODULE])."
        )
    return ENCODERS[name]
