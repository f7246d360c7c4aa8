"""Script-relaunching DDP (``trainer=ddp``) inside a Hydra multirun, one job at a time."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write


@contextmanager
def relaunchable_job(output_dir: Path) -> Iterator[None]:
    """Make Lightning's relaunch of ranks > 0 run this multirun job, and only this job.

    With ``trainer=ddp`` Lightning starts the other ranks by re-running ``sys.argv`` with
    ``hydra.run.dir`` set to the run folder (``_hydra_subprocess_cmd`` in lightning_fabric).
    In a multirun that command line is the whole sweep and the run folder is not the job's,
    so every rank would run every job. For the duration of one job this makes the command
    line this job's overrides (as a single run) and the run folder this job's folder. After
    the job it destroys the process group and removes the variables Lightning exported
    (``LOCAL_RANK``, ``MASTER_PORT``, ...), so the next job launches ranks of its own.
    Outside a multirun it does nothing.
    """
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        yield
        return
    hydra = HydraConfig.get()
    saved_argv, saved_env, saved_run_dir = sys.argv[:], dict(os.environ), hydra.run.dir
    # hydra.mode=RUN: an experiment may set MULTIRUN in its config (hparams_search=optuna)
    sys.argv = [sys.argv[0], *hydra.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra.run):
        hydra.run.dir = str(output_dir)
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra.run):
            hydra.run.dir = saved_run_dir
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        os.environ.update(saved_env)
