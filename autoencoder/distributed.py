"""Script-relaunching DDP (``trainer=ddp``) inside a Hydra multirun, one job at a time."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

from autoencoder.compat import launched_rank_processes

log = logging.getLogger(__name__)

# After a job, how long rank 0 waits for the job's other ranks to exit: they only have to
# finish their last steps and tear down, or fail on their own if rank 0 failed.
RANK_EXIT_SECONDS = 120.0
RANK_EXIT_SECONDS_AFTER_A_FAILURE = 15.0


class JobRanks:
    """The ranks > 0 that Lightning launched for one job of a multirun (none otherwise)."""

    def __init__(self) -> None:
        # the trainer, not its launcher's list: the launcher replaces the list when it launches
        self.trainer: pl.Trainer | None = None

    def attach(self, trainer: pl.Trainer) -> None:
        """The job's trainer, whose launcher starts the other ranks when it first fits."""
        self.trainer = trainer

    def wait(self, job_failed: bool) -> list[str]:
        """Wait for the ranks to exit (killing those still running past the deadline);
        what went wrong with them, one line per rank, empty when every rank exited cleanly.

        The launcher's list is emptied first: Lightning's child-process observer watches it
        and, when a rank exits non-zero, SIGKILLs this process, which in a multirun is the
        whole sweep. Once a job is over, its ranks are this function's to judge.
        """
        processes = launched_rank_processes(self.trainer) if self.trainer is not None else []
        ranks = list(processes)
        processes.clear()
        deadline = RANK_EXIT_SECONDS_AFTER_A_FAILURE if job_failed else RANK_EXIT_SECONDS
        problems = []
        for rank, process in enumerate(ranks, start=1):
            try:
                code = process.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                problems.append(f"rank {rank} still ran {deadline:g} s after rank 0; killed")
                continue
            if code != 0:
                problems.append(f"rank {rank} exited with code {code}")
        return problems


@contextmanager
def relaunchable_job(output_dir: Path) -> Iterator[JobRanks]:
    """Make Lightning's relaunch of ranks > 0 run this multirun job, and only this job.

    With ``trainer=ddp`` Lightning starts the other ranks by re-running ``sys.argv`` with
    ``hydra.run.dir`` set to the run folder (``_hydra_subprocess_cmd`` in lightning_fabric).
    In a multirun that command line is the whole sweep and the run folder is not the job's,
    so every rank would run every job. For the duration of one job this makes the command
    line this job's overrides (as a single run) and the run folder this job's folder.

    After the job, rank 0 waits for the other ranks to exit (pass the job's trainer to the
    yielded :class:`JobRanks`), and only then destroys the process group, which they may
    still use as they tear down, and removes the variables Lightning exported
    (``LOCAL_RANK``, ``MASTER_PORT``, ...), so the next job launches ranks of its own and
    no rank of one job outlives it. Outside a multirun it does nothing.
    """
    ranks = JobRanks()
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        yield ranks
        return
    hydra = HydraConfig.get()
    saved_argv, saved_env, saved_run_dir = sys.argv[:], dict(os.environ), hydra.run.dir
    # hydra.mode=RUN: an experiment may set MULTIRUN in its config (hparams_search=optuna)
    sys.argv = [sys.argv[0], *hydra.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra.run):
        hydra.run.dir = str(output_dir)
    job_failed = True
    try:
        yield ranks
        job_failed = False
    finally:
        sys.argv = saved_argv
        with read_write(hydra.run):
            hydra.run.dir = saved_run_dir
        problems = ranks.wait(job_failed)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        os.environ.update(saved_env)
        for problem in problems:  # rank 0's results stand: it could only finish with the others
            log.warning("%s: %s (its own output above shows why)", output_dir, problem)
