"""The project's configs outside a Hydra app, and Hydra instantiation that lets the
project's own error messages through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from autoencoder.errors import AutoencoderError

# The configs of a source checkout (conf/ sits beside the package).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def config_dir() -> Path:
    """The folder of the project's configs."""
    return CONFIG_DIR


def compose_config(name: str, *overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """One of the project's configs (``train``, ``evaluate``, ``encode``, ``pretrain``) with
    command-line overrides, composed as the script would (for notebooks, benchmarks and
    tests). ``return_hydra_config`` keeps the ``hydra`` section."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name=name, overrides=list(overrides), return_hydra_config=return_hydra_config
        )


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
