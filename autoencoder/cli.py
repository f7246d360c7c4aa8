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
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig

from autoencoder.config import compose_config, config_dir
from autoencoder.errors import AutoencoderError, ConfigError, StepFailed, user_message
from autoencoder.preflight import check_config, composed_as_job

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
        lightning_into_job_log()
        summary = run_job(job, cfg)
        if isinstance(summary, tuple):  # train's (record, objects): the objects are not kept
            summary = summary[0]
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


def lightning_into_job_log() -> None:
    """Lightning's messages (the start's score, the phase switch, the re-estimated
    statistics) into the job's ``.log`` file too. Lightning gives its logger a console
    handler of its own, without propagation, when it is imported before Hydra configures
    logging; the root logger's handlers (Hydra's console and file) take its records instead."""
    if not logging.getLogger().handlers:  # no job logging configured: leave Lightning's own
        return
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def job_command(job: str, *overrides: str) -> list[str]:
    """The command line that runs one of the package's jobs (``train``, ``evaluate``,
    ``encode``, ``pretrain``) in a fresh interpreter, as a user would: ``python -m
    autoencoder.<job> overrides...``, which works from any folder and from an installed
    package (no path to ``scripts/``)."""
    return [sys.executable, "-m", f"autoencoder.{job}", *overrides]


def launch(command: Sequence[str]) -> None:
    """Print a :func:`job_command` as a user would type it (``$ python -m autoencoder.train
    ...``), then run it; a job that fails raises :class:`StepFailed`, naming the command,
    its exit status and its log file."""
    shown = shlex.join(["python", *command[1:]])
    print("$", shown, flush=True)
    status = subprocess.run(list(command)).returncode
    if status != 0:
        raise StepFailed(
            f"a step failed with exit status {status}: {shown}; its log: {_job_log(command)}. "
            "Fix what its error says and run the same command again: finished steps are "
            "not repeated."
        )


def check_commands(commands: Iterable[Sequence[str]], replaced: Iterable[str] = ()) -> None:
    """Compose the config of each :func:`job_command` as its job will and make the job's
    checks (:func:`~autoencoder.preflight.check_config`); raise one :class:`ConfigError`
    listing every problem, each with its command, so that a benchmark launches nothing
    before every job it plans is known to start. A key a command sets twice is a problem
    (the user's value would be ignored), except the keys ``replaced``, which the caller
    sets after the user's on purpose (a transfer strategy decides the start)."""
    problems = []
    replaced = set(replaced)
    for command in commands:
        shown = shlex.join(["python", *command[1:]])
        kept = [o for o in command[3:] if o.lstrip("+~").partition("=")[0] not in replaced]
        task, overrides = command[2].rpartition(".")[2], command[3:]
        found = _set_twice(kept) + config_problems(
            lambda task=task, overrides=overrides: compose_config(
                task, *overrides, return_hydra_config=True
            )
        )
        problems += [f"{shown}: {line}" for line in found]
    if problems:
        raise ConfigError("\n".join(problems))


def config_problems(compose: Callable[[], DictConfig], devices: bool = True) -> list[str]:
    """The problems of the job config that ``compose()`` gives (with its ``hydra`` section,
    composed outside a running job), one line each: what the job's checks would report
    (:func:`~autoencoder.preflight.check_config`; ``devices=False`` for a job that runs on
    another machine), or Hydra's error for an unknown option or key."""
    try:
        cfg = compose()
        with composed_as_job(cfg):
            import_modules(cfg.get("imports"))
            check_config(cfg, devices)
    except AutoencoderError as error:
        return user_message(error).splitlines()
    except HydraException as error:
        return [hydra_error_line(error)]
    return []


def _set_twice(overrides: Sequence[str]) -> list[str]:
    """A key that a planned command sets twice with different values: the later one (the
    benchmark's own setting) would win, and the user's would be ignored."""
    values: dict[str, list[str]] = {}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        values.setdefault(key, []).append(value)
    return [
        f"{key} is set twice ({key}={given[0]}, then {key}={given[-1]}): the benchmark sets it "
        "itself, so the override would be ignored; use the benchmark's own option for it "
        "(e.g. --epochs for trainer.max_epochs) or leave it out."
        for key, given in values.items()
        if len(set(given)) > 1
    ]


def hydra_error_line(error: BaseException) -> str:
    """Hydra's error for an unknown option or key as one line, without its search path."""
    return " ".join(str(error).partition("Config search path")[0].split())


def _job_log(command: Sequence[str]) -> str:
    """The ``.log`` file of a :func:`job_command` run in the folder its ``hydra.run.dir``
    names (``conf/hydra/default.yaml`` names it after the job), else "the output above"."""
    job = next((part.rpartition(".")[2] for part in command if part.startswith("autoencoder.")), "")
    folder = next((p.partition("=")[2] for p in command if p.startswith("hydra.run.dir=")), "")
    return f"{folder}/{job}.log" if folder and job else "the output above"


def run_job(job: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Import the modules named by ``imports``, validate the config and make every check it
    and the file system decide (:func:`~autoencoder.preflight.check_job`), then run the job;
    with ``check=true``, stop there. A user error prints its message (no traceback) and
    exits with status 1.

    In a multirun the error is logged and re-raised instead, so Hydra records the job as
    failed and goes on with the others.
    """
    try:
        import_modules(cfg.get("imports"))
        check_config(cfg)  # trainer.precision=auto resolved here: a value Lightning accepts
        if cfg.get("check"):
            print(f"check: {cfg.get('task_name', 'job')} config OK; nothing was run (check=true).")
            return None
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
