"""After a multirun job, rank 0 waits for the job's other ranks (autoencoder/distributed.py):
none outlives its job, and one that exits non-zero late does not bring the sweep down."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
from lightning_fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

from autoencoder import distributed
from autoencoder.compat import launched_rank_processes
from autoencoder.distributed import JobRanks


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.fixture
def ddp_job() -> tuple[JobRanks, list[subprocess.Popen]]:
    """A job's ranks as the launcher records them (the processes are the test's to start)."""
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    ranks = JobRanks()
    ranks.attach(trainer)
    return ranks, launched_rank_processes(trainer)


def test_a_rank_failing_after_its_job_is_reported_and_does_not_kill_the_sweep(ddp_job) -> None:
    ranks, launched = ddp_job
    launched.append(python("import sys, time; time.sleep(1); sys.exit(3)"))
    # Lightning's observer SIGKILLs its "main" process when a rank exits non-zero; here the
    # main process is a stand-in, so the test sees what would have happened to a sweep
    sweep = python("import time; time.sleep(60)")
    _ChildProcessObserver(main_pid=sweep.pid, child_processes=launched, sleep_period=0.1).start()
    try:
        assert ranks.wait(job_failed=False) == ["rank 1 exited with code 3"]
        assert launched == []  # handed over: the observer stops watching
        time.sleep(0.5)  # a few more rounds of the observer
        assert sweep.poll() is None, "the observer killed the sweep"
    finally:
        sweep.kill()
        sweep.wait()


def test_ranks_that_finish_cleanly_are_waited_for(ddp_job) -> None:
    ranks, launched = ddp_job
    rank = python("import time; time.sleep(1)")
    launched.append(rank)
    assert ranks.wait(job_failed=False) == []
    assert rank.returncode == 0  # it was waited for, not left running into the next job


def test_a_rank_left_waiting_for_a_failed_rank_zero_is_killed(ddp_job, monkeypatch) -> None:
    monkeypatch.setattr(distributed, "RANK_EXIT_SECONDS_AFTER_A_FAILURE", 0.5)
    ranks, launched = ddp_job
    rank = python("import time; time.sleep(60)")  # as if blocked in a collective
    launched.append(rank)
    started = time.monotonic()
    assert ranks.wait(job_failed=True) == ["rank 1 still ran 0.5 s after rank 0; killed"]
    assert rank.returncode is not None and time.monotonic() - started < 30


def test_a_job_without_launched_ranks_waits_for_nothing() -> None:
    assert JobRanks().wait(job_failed=False) == []
