"""Shared behaviour of the Hydra entry points: user errors as one clear message."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
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


# Keys that were renamed: old key -> (new key, the new spelling of old values that changed).
RENAMED_KEYS: dict[str, tuple[str, dict[str, str]]] = {
    "finetune.train_bn": ("finetune.frozen_bn", {"true": "train", "false": "eval"}),
    "finetune.bn_policy": ("finetune.unfrozen_bn", {}),
    "finetune.schedule": ("finetune.encoder_schedule", {}),
}


def renamed_key_errors(overrides: Sequence[str]) -> list[str]:
    """One message for each command-line override that sets a renamed key, with the
    override to write instead."""
    errors = []
    for override in overrides:
        key, equals, value = override.lstrip("~+").partition("=")
        if key not in RENAMED_KEYS:
            continue
        new_key, new_values = RENAMED_KEYS[key]
        message = f"{key} was renamed to {new_key}"
        if equals:
            written = ",".join(new_values.get(v.strip().lower(), v) for v in value.split(","))
            message += f": write {new_key}={written}"
        errors.append(message + ".")
    return errors


def exit_on_renamed_keys(overrides: Sequence[str] | None = None) -> None:
    """Exit with status 1 and an ``error:`` line per renamed key set in ``overrides`` (the
    command line's by default). Hydra rejects an unknown key before any job runs, so an
    entry point calls this before handing the command line to Hydra."""
    errors = renamed_key_errors(sys.argv[1:] if overrides is None else overrides)
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
