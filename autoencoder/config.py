"""The project's configs outside a Hydra app, and Hydra instantiation that lets the
project's own error messages through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from autoencoder.errors import AutoencoderError, ConfigError

# The installed package (site-packages/autoencoder), or the checkout's autoencoder/.
PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The folder of the project's configs, the one place that says where it is.

    Run from a source checkout (``pyproject.toml`` beside the package; an editable install
    runs from there too): the checkout's top-level ``conf/``. From a non-editable install:
    the copy of ``conf/`` the wheel ships inside the package, ``autoencoder/conf``
    (pyproject.toml's ``package-dir``).
    """
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():
        folder = checkout / "conf"
        fix = "restore it from the repository (git checkout -- conf)"
    else:
        folder = PACKAGE_DIR / "conf"
        fix = (
            "reinstall the package from a checkout (pip install .), whose wheel ships the "
            "configs as autoencoder/conf"
        )
    if not (folder / "train.yaml").is_file():
        raise ConfigError(
            f"the project's configs are missing: no conf/ with train.yaml at {folder}; {fix}."
        )
    return folder


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
