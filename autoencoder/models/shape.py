"""The model's shape: the settings that decide the shapes of its weights, as one value.

A checkpoint records it (:data:`ARCHITECTURE_KEY`), an exported encoder's sidecar and a
pretrained classifier's description carry its encoder part, and every check that weights
fit a model compares two of them, so each setting is named in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from autoencoder.errors import ConfigError

# Where a checkpoint records the settings that decide the shapes of the model's weights.
ARCHITECTURE_KEY = "autoencoder_architecture"


@dataclass(frozen=True)
class EncoderGeometry:
    """Which network, cut where, and how images reach its stages: what pretrained weights
    must match (a stage pretrained on other input geometry sees objects at a scale it never
    learnt).

    Attributes:
        name: the encoder's registry name (``encoder.name``).
        depth: stages kept (``None``: all, or unknown for a classifier's full network).
        stem_pool: the first stage's max-pool is kept.
        input_scale: images are resized up by this factor inside the encoder.
    """

    name: str
    depth: int | None = None
    stem_pool: bool = True
    input_scale: int = 1

    # the settings pretrained weights must share with the encoder that loads them
    GEOMETRY = ("stem_pool", "input_scale")

    def config_keys(self) -> dict[str, Any]:
        """As ``encoder.*`` config keys."""
        return {f"encoder.{key}": value for key, value in asdict(self).items()}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, info: Mapping[str, Any], name: str | None = None) -> EncoderGeometry:
        """From a sidecar or description; settings it lacks (files written before they
        existed) take their defaults."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in info.items() if key in known}
        values.setdefault("name", name)
        return cls(**values)

    def geometry_differences(self, other: EncoderGeometry) -> list[str]:
        """The input-geometry settings (:attr:`GEOMETRY`) in which ``other`` differs."""
        return [key for key in self.GEOMETRY if getattr(self, key) != getattr(other, key)]


@dataclass(frozen=True)
class ModelShape:
    """Everything that decides the shapes of an autoencoder's weights.

    Attributes:
        encoder: the encoder's network, cut and input geometry.
        latent_channels: channels of the latent map.
        bottleneck_kernel_size: the bottleneck conv's kernel (1 or 3).
        bottleneck_activation: the latent's activation.
        decoder: the decoder's settings (``Decoder.settings()``), by name.
    """

    encoder: EncoderGeometry
    latent_channels: int
    bottleneck_kernel_size: int = 1
    bottleneck_activation: str = "none"
    decoder: tuple[tuple[str, Any], ...] = ()

    def config_keys(self) -> dict[str, Any]:
        """As the config keys that set them (``encoder.depth``, ``model.latent_channels``,
        ``decoder.width``, ...): the checkpoint's architecture record."""
        return {
            **self.encoder.config_keys(),
            "model.latent_channels": self.latent_channels,
            "model.bottleneck_kernel_size": self.bottleneck_kernel_size,
            "model.bottleneck_activation": self.bottleneck_activation,
            **{f"decoder.{key}": value for key, value in self.decoder},
        }

    @classmethod
    def from_config_keys(cls, keys: Mapping[str, Any]) -> ModelShape:
        """From an architecture record (:meth:`config_keys`); settings it lacks take their
        defaults."""
        encoder = {
            key.removeprefix("encoder."): value
            for key, value in keys.items()
            if key.startswith("encoder.")
        }
        model = {
            key.removeprefix("model."): value
            for key, value in keys.items()
            if key.startswith("model.")
        }
        decoder = tuple(
            (key.removeprefix("decoder."), value)
            for key, value in keys.items()
            if key.startswith("decoder.")
        )
        return cls(
            encoder=EncoderGeometry.from_json(encoder),
            latent_channels=int(model.get("latent_channels", 0)),
            bottleneck_kernel_size=int(model.get("bottleneck_kernel_size", 1)),
            bottleneck_activation=str(model.get("bottleneck_activation", "none")),
            decoder=decoder,
        )


def recorded_shape(checkpoint: Mapping[str, Any]) -> ModelShape | None:
    """The shape a checkpoint records; ``None`` for one written before it was recorded."""
    saved = checkpoint.get(ARCHITECTURE_KEY)
    return ModelShape.from_config_keys(saved) if isinstance(saved, Mapping) else None


def checkpoint_mismatch(
    checkpoint: Mapping[str, Any],
    record: Mapping[str, Any],
    state_dict: Mapping[str, Any],
    optimizer: bool = True,
) -> str:
    """Why ``checkpoint`` cannot be loaded into the model whose architecture record is
    ``record`` and whose weights are ``state_dict`` ("" when it can).

    Names the differing settings when the checkpoint records them (every checkpoint
    written since they are saved), else the weights whose names or shapes differ. A
    setting the checkpoint does not record is newer than the checkpoint, and the weights
    decide. ``optimizer=False`` ignores the optimiser (for loading the weights alone).
    """
    saved = checkpoint.get(ARCHITECTURE_KEY)
    if isinstance(saved, Mapping):
        keys = [
            key
            for key in record
            if key in saved and saved[key] != record[key] and (optimizer or key != "optimizer")
        ]
        if keys:
            there = ", ".join(f"{key}={saved.get(key)}" for key in keys)
            here = ", ".join(f"{key}={record[key]}" for key in keys)
            return f"was saved with {there}, but this config has {here}"
    return state_dict_mismatch(checkpoint.get("state_dict", {}), state_dict)


def check_growable(state_dict: Mapping[str, Any], expected: Mapping[str, Any], source: str) -> None:
    """Raise :class:`ConfigError` unless ``state_dict`` is the weights of a smaller (or the
    same) model than the one whose weights are ``expected``: a weight of another shape, or
    one ``expected`` lacks (trained weights that would be dropped), cannot be loaded."""
    problem = state_dict_mismatch({**expected, **state_dict}, expected)
    if problem:
        raise ConfigError(
            f"{source} {problem}. Only weights can be added, not dropped or reshaped: "
            "start from the overrides of the run that wrote it (its "
            ".hydra/overrides.yaml) and only add blocks or stages."
        )


def state_dict_mismatch(
    saved: Mapping[str, Any], expected: Mapping[str, Any], shown: int = 3
) -> str:
    """The weights of ``saved`` that are missing, unexpected or of another shape ("" if none)."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    wrong = sorted(
        f"{key} ({_shape(saved[key])} in the checkpoint, {_shape(expected[key])} here)"
        for key in set(saved) & set(expected)
        if getattr(saved[key], "shape", None) != expected[key].shape
    )
    problems = [
        f"{len(keys)} {label}: {', '.join(keys[:shown])}"
        + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")
        for label, keys in (
            ("weights of another shape", wrong),
            ("missing weights", missing),
            ("unexpected weights", unexpected),
        )
        if keys
    ]
    return "does not fit this model: " + "; ".join(problems) if problems else ""


def _shape(tensor: Any) -> str:
    return "x".join(str(size) for size in getattr(tensor, "shape", ())) or "scalar"
