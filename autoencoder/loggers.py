"""Experiment loggers: W&B that works without an account, CSV logs that survive a resume,
and run bookkeeping."""

from __future__ import annotations

import netrc
import os
import secrets
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from autoencoder.compat import use_appending_csv_writer, wandb_run_started
from autoencoder.errors import check_choice

if TYPE_CHECKING:
    import torch

WandbMode = Literal["auto", "online", "offline", "disabled"]
# In a run folder: the id of its W&B run, which a resumed job continues.
RUN_ID_FILE = "wandb_run_id.txt"


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, except that a run resumed into the same folder appends to
    its ``metrics.csv``: Lightning's deletes the file, and with it the log of every epoch
    before the resume. Logs go to ``save_dir/name/version/metrics.csv``."""

    def __init__(
        self,
        save_dir: str,
        name: str = "csv",
        version: str = "",
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(
            save_dir,
            name=name,
            version=version,
            prefix=prefix,
            flush_logs_every_n_steps=flush_logs_every_n_steps,
        )

    @property
    def experiment(self) -> Any:
        if rank_zero_only.rank == 0:
            use_appending_csv_writer(self)
        return super().experiment


def machine_description(device: torch.device | None = None) -> str:
    """The machine a run trained or a benchmark ran on, for records and result tables: the
    GPU (``device``'s; without one, the first GPU where there is one), or the CPU's core
    count."""
    import platform

    import torch

    if device.type == "cuda" if device is not None else torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device or 0)}, torch {torch.__version__}"
    cores = os.cpu_count() or 0
    return f"{cores}-core {platform.machine()} CPU, torch {torch.__version__.split('+')[0]}"


def wandb_credentials_available() -> bool:
    """True when ``wandb login`` stored a key or ``WANDB_API_KEY`` is set."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: WandbMode) -> str:
    """``auto`` means: ``WANDB_MODE`` if the user set it, online with credentials, else offline."""
    check_choice("logger.wandb.mode", mode, WandbMode)
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials_available() else "offline"


def wandb_logger(
    save_dir: str,
    project: str = "pretrained-autoencoders",
    mode: WandbMode = "auto",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str = "train",
    log_model: bool = False,
    resume_from: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` that runs offline when no credentials are configured.

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with
    ``wandb sync``. W&B refuses model artifacts offline, so ``log_model`` is dropped there.
    In a Hydra multirun, ``group`` and ``name`` default to the sweep and the job
    (:func:`multirun_group_and_name`).

    The run's id is kept in ``save_dir/wandb_run_id.txt``. A job that resumes from a
    checkpoint (``resume_from``, the job's ``ckpt_path``) continues the W&B run of the
    folder that checkpoint belongs to, in the same folder or a new one; any other job starts
    a new run. Other keyword arguments go to ``WandbLogger`` and on to ``wandb.init``
    (``+logger.wandb.notes=...``).
    """
    resolved = resolve_wandb_mode(mode)
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    group, name = multirun_group_and_name(hydra, group, name)
    os.makedirs(save_dir, exist_ok=True)
    run_id = resumed_run_id(resume_from)
    if rank_zero_only.rank == 0:
        run_id = run_id or new_run_id()
        (Path(save_dir) / RUN_ID_FILE).write_text(run_id + "\n")
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
        id=run_id,
        resume="allow" if run_id else None,
        **kwargs,
    )


def new_run_id() -> str:
    """A W&B-style run id: 8 random lowercase letters and digits."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def resumed_run_id(ckpt_path: str | None) -> str | None:
    """The W&B run id recorded in the run folder of ``ckpt_path``
    (``<run>/checkpoints/*.ckpt``), if any."""
    if not ckpt_path:
        return None
    file = Path(ckpt_path).expanduser().absolute().parent.parent / RUN_ID_FILE
    return file.read_text().strip() if file.is_file() else None


def multirun_group_and_name(
    hydra: DictConfig | None, group: str | None, name: str | None
) -> tuple[str | None, str | None]:
    """Group and name of a job's W&B run, given the Hydra config of the job (if any).

    In a multirun, a ``null`` group becomes the sweep folder's name, so a sweep's runs are
    grouped together, and a ``null`` name becomes ``job{num}`` followed by the job's
    overrides, so the runs in a group tell apart. Values that are set are kept.
    """
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return group, name
    if group is None:
        group = Path(hydra.sweep.dir).name
    if name is None:
        overrides = hydra.job.override_dirname
        name = f"job{hydra.job.num} {overrides}" if overrides else f"job{hydra.job.num}"
    return group, name


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """A job's config as loggers record it: every ``${...}`` resolved, plus ``overrides``, the
    command-line overrides of the job (empty outside a Hydra application)."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return {**OmegaConf.to_container(cfg, resolve=True), "overrides": overrides}


def finish_loggers(loggers: Sequence[Logger], failed: bool) -> None:
    """Close W&B runs (marked failed when the job failed), so every job gets its own run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and wandb_run_started(logger):
            logger.experiment.finish(exit_code=1 if failed else 0)
