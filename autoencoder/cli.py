"""Shared behaviour of the Hydra entry points: the user's own modules imported first, user
errors as one clear message."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig

from autoencoder.errors import AutoencoderError, ConfigError, user_message
from autoencoder.validation import validate_config

log = logging.getLogger("autoencoder")


def run_job(job: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Import the modules named by ``imports``, validate the config, then run the job. A user
    error prints its message (no traceback) and exits with status 1.

    In a multirun the error is logged and re-raised instead, so Hydra records the job as
    failed and goes on with the others.
    """
    try:
        import_modules(cfg.get("imports"))
        validate_config(cfg)
        return job(cfg)
    except AutoencoderError as error:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("%s", user_message(error))
            raise
        for line in user_message(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(1)


def import_modules(names: Any) -> None:
    """Import the modules of the ``imports`` key before anything is built, so that what they
    register (``register_encoder(...)``) exists when the config is instantiated.

    A module is looked up on the Python path (``PYTHONPATH``, installed packages) and then in
    the folder the command runs from.
    """
    if names is None:
        return
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple, ListConfig)) or not all(
        isinstance(name, str) for name in names
    ):
        raise ConfigError(
            f"imports must be a list of module names, e.g. imports=[my_package.my_encoders]; "
            f"got {names!r}."
        )
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"imports: cannot import {name!r} ({type(error).__name__}: {error}). Put the "
                "folder that holds it on PYTHONPATH or install its package, or fix the name in "
                "imports=[...]."
            ) from error
