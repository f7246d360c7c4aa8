"""Shared behaviour of the Hydra entry points: the user's own modules imported first, user
errors as one clear message, and the command line that runs a job in a fresh interpreter."""

from __future__ import annotations

import importlib
import logging
import math
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig

from autoencoder.config import config_dir
from autoencoder.errors import AutoencoderError, ConfigError, user_message
from autoencoder.validation import validate_config

log = logging.getLogger("autoencoder")


def hydra_main(
    job: Callable[[DictConfig], Any], config_name: str, metric: str | None = None
) -> Callable[[], Any]:
    """The Hydra entry point of a job, for ``python -m autoencoder.<job>`` and the thin
    ``scripts/``: the project's configs (:func:`~autoencoder.config.config_dir`, found in a
    checkout or in the installed package, when the entry point runs), :func:`run_job`, and
    for sweepers the value of ``metric`` in the job's record (``metric`` names it, or a
    config key that does, such as ``optimized_metric``).

    ``conf/hydra/default.yaml`` names the job after the config's ``task_name`` (its
    ``.log`` file, ``hydra.job.name``).
    """

    def main(cfg: DictConfig) -> Any:
        summary = run_job(job, cfg)
        if metric is None:
            return None
        value = summary.get(cfg.get(metric, metric)) if isinstance(summary, dict) else None
        return float(value) if value is not None else math.nan

    def entry_point() -> Any:
        try:
            folder = config_dir()
        except AutoencoderError as error:
            exit_with_message(error)
        return hydra.main(version_base="1.3", config_path=str(folder), config_name=config_name)(
            main
        )()

    return entry_point


def job_command(job: str, *overrides: str) -> list[str]:
    """The command line that runs one of the package's jobs (``train``, ``evaluate``,
    ``encode``, ``pretrain``) in a fresh interpreter, as a user would: ``python -m
    autoencoder.<job> overrides...``, which works from any folder and from an installed
    package (no path to ``scripts/``)."""
    return [sys.executable, "-m", f"autoencoder.{job}", *overrides]


def launch(command: Sequence[str]) -> None:
    """Print a :func:`job_command` as a user would type it (``$ python -m autoencoder.train
    ...``), then run it; a job that fails raises ``subprocess.CalledProcessError``."""
    print("$", shlex.join(["python", *command[1:]]), flush=True)
    subprocess.run(list(command), check=True)


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
        exit_with_message(error)


def exit_with_message(error: AutoencoderError) -> NoReturn:
    """Print a user error as ``error:`` lines (no traceback) and exit with status 1."""
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
