"""Shared behaviour of the Hydra entry points: user errors as one clear message."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from autoencoder.errors import AutoencoderError, user_message
from autoencoder.validation import validate_config

log = logging.getLogger("autoencoder")


def run_job(job: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Validate the config, then run the job. A user error prints its message (no
    traceback) and exits with status 1.

    In a multirun the error is logged and re-raised instead, so Hydra records the job as
    failed and goes on with the others.
    """
    try:
        validate_config(cfg)
        return job(cfg)
    except AutoencoderError as error:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("%s", user_message(error))
            raise
        for line in user_message(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
