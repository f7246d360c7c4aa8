"""Every use of a library's private API, in one place.

Each function wraps one private attribute that no public API replaces, and
``tests/test_compat.py`` checks each against the installed library, so an upgrade of torch,
Lightning, Hydra or OmegaConf that changes one fails there, by name.
"""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, ListConfig
from omegaconf.base import Node
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
from torch.optim.lr_scheduler import LambdaLR


def reapply_lr_lambdas(scheduler: LambdaLR) -> None:
    """Set every group's rate to ``base_lr * lr_lambda(step)`` at the scheduler's current
    step now, after what the lambdas read changed in the middle of a step, so the change
    holds from the next optimiser step; ``get_last_lr()`` then reports the new rates (torch
    keeps them in ``_last_lr``, which only ``step()`` updates)."""
    groups = scheduler.optimizer.param_groups
    for group, base, fn in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]


def lerp_all_(
    tensors: list[torch.Tensor], targets: list[torch.Tensor], weight: float | torch.Tensor
) -> None:
    """In place, ``tensor += weight * (target - tensor)`` for every pair, in one kernel per
    device and dtype: torch's foreach lerp, which torch's own EMA averaging uses and which
    has no public name. ``weight`` may be a 0-dim tensor on the tensors' device (no host
    sync)."""
    torch._foreach_lerp_(tensors, targets, weight)


def copy_all_(tensors: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """In place, ``tensor.copy_(source)`` for every pair (torch's foreach copy)."""
    torch._foreach_copy_(tensors, sources)


def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether the values logged at this training step reach the loggers (Lightning's own
    cadence, ``trainer.log_every_n_steps``): a value logged ``on_step`` at the other steps is
    overwritten unseen."""
    return bool(trainer._logger_connector.should_update_logs)


def failed_job_exception(job_return: JobReturn) -> BaseException:
    """The exception of a failed Hydra job. The public ``return_value`` re-raises it and
    writes "Error executing job ..." to stderr; the summary only needs to read it."""
    return job_return._return_value


def config_child(node: DictConfig, key: str) -> Node:
    """The node under ``key`` without resolving interpolations such as
    ``${hydra:runtime.output_dir}``, which only resolve inside a running job."""
    return node._get_node(key)


def config_items(node: ListConfig) -> Iterator[Any]:
    """The items of a list node, unresolved (see :func:`config_child`): containers as
    nodes, other values as written."""
    return node._iter_ex(resolve=False)


def ddp_finds_unused_parameters(strategy: DDPStrategy) -> bool:
    """Whether a DDP strategy was created with ``find_unused_parameters=True``."""
    return bool(strategy._ddp_kwargs.get("find_unused_parameters", False))


def uses_distributed_sampler(trainer: pl.Trainer) -> bool:
    """The Trainer's ``use_distributed_sampler`` argument, which Lightning keeps on its
    accelerator connector only."""
    return bool(trainer._accelerator_connector.use_distributed_sampler)


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The trainer ``module`` is attached to, ``None`` outside a fit, test or validation:
    the public ``trainer`` property raises instead."""
    return module._trainer


def batches_done_in_epoch(trainer: pl.Trainer) -> int:
    """The training batches the current epoch has completed: the fit loop's progress
    counter, which Lightning's own callbacks read and no public name gives."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def launched_rank_processes(trainer: pl.Trainer) -> list[subprocess.Popen]:
    """The processes Lightning's script launcher started for ranks > 0 (``trainer=ddp``):
    the launcher's own list, which its child-process observer thread watches. Empty for
    strategies that launch nothing."""
    launcher = trainer.strategy.launcher
    return launcher.procs if isinstance(launcher, _SubprocessScriptLauncher) else []


def wandb_run_started(logger: WandbLogger) -> bool:
    """Whether the logger has started its W&B run (its ``experiment`` property would start
    one)."""
    return logger._experiment is not None


class AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, except that an existing ``metrics.csv`` is kept and
    appended to: Lightning deletes it when the folder is reused, so a run resumed with
    ``ckpt_path`` would lose the log of every epoch before the resume."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])


def use_appending_csv_writer(logger: CSVLogger) -> None:
    """Make ``logger`` write through :class:`AppendingCSVWriter` (before its first use)."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = AppendingCSVWriter(log_dir=logger.log_dir)


def basic_sweeper_jobs(overrides: list[Override]) -> list[list[str]]:
    """The overrides of every job Hydra's basic sweeper makes of ``overrides`` (its sweeps
    expanded into their product, in its order). The sweeper's own ``split_arguments`` is
    the only definition of that order; it lives in Hydra's ``_internal`` package."""
    return BasicSweeper.split_arguments(overrides, None)[0]
