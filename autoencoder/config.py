"""Hydra instantiation that lets the project's own error messages through."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from autoencoder.errors import AutoencoderError


def instantiate(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising an :class:`AutoencoderError` from a constructor
    as itself rather than wrapped in Hydra's ``InstantiationException``."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, AutoencoderError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def instantiate_all(section: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a config mapping (callbacks, loggers)."""
    if not section:
        return []
    return [instantiate(entry) for entry in section.values() if entry is not None]
