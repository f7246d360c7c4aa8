"""Experiment loggers: W&B that works without an account, and run bookkeeping."""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from urllib.parse import urlparse

from pytorch_lightning.loggers import Logger, WandbLogger

from autoencoder.errors import ConfigError

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_credentials_available() -> bool:
    """True when ``wandb login`` stored a key or ``WANDB_API_KEY`` is set."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` means: ``WANDB_MODE`` if the user set it, online with credentials, else offline."""
    if mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={mode!r} is invalid; use one of {WANDB_MODES}.")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials_available() else "offline"


def wandb_logger(
    project: str,
    save_dir: str,
    mode: str = "auto",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str = "train",
    log_model: bool = False,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` that runs offline when no credentials are configured.

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with
    ``wandb sync``. W&B refuses model artifacts offline, so ``log_model`` is dropped there.
    """
    resolved = resolve_wandb_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        entity=entity,
        name=name,
        group=group,
        tags=list(tags),
        job_type=job_type,
        log_model=log_model if resolved == "online" else False,
        mode=resolved,
    )


def finish_loggers(loggers: Sequence[Logger], failed: bool) -> None:
    """Close W&B runs (marked failed when the job failed), so every job gets its own run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=1 if failed else 0)
