"""Multirun bookkeeping: every job checked before the first starts, and one sortable table
of every job's status, overrides and metrics.

Both are Hydra callbacks (``hydra.callbacks`` in ``conf/hydra/default.yaml``).
:class:`CheckJobsFirst` composes the config of every job the sweep plans and runs the
checks of a single run on it (:func:`autoencoder.preflight.check_config`) before any job
starts, so a bad value in job 17 of 20 is reported in seconds. :class:`SweepSummary`, after
each job, records the job's status in ``<job dir>/job_status.json`` and rewrites ``<sweep
dir>/summary.csv`` from every job folder, so the table is current after every job, also
when a later job fails or the sweep is interrupted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from autoencoder.atomic import atomic_save
from autoencoder.cli import config_problems
from autoencoder.compat import basic_sweeper_jobs, failed_job_exception
from autoencoder.errors import user_message
from autoencoder.run_folder import RunFolder

log = logging.getLogger(__name__)

# metrics.json entries that are not results, or not one value: paths, the start's and the last
# epoch's scores
NOT_RESULTS = ("best_ckpt", "start", "last_epoch", "schema_version")


class CheckJobsFirst(Callback):
    """Before a multirun launches its first job, compose every job's config and check it as
    a single run would be checked; report every problem, one line each with the job's
    overrides, and exit with status 1 without running any job. With ``check=true``, exit
    after the checks either way.

    Jobs of the basic sweeper (``-m key=a,b``, SLURM) are checked one by one, at most
    ``max_jobs`` of them. For a search sweeper (Optuna), whose trials are not known in
    advance, each value of its search space is checked once: every option of a ``choice``
    and both ends of an ``interval``, the other keys at their first value. Devices are
    checked only for jobs that run on this machine (not for a cluster's launcher).
    """

    def __init__(self, max_jobs: int = 500) -> None:
        self.max_jobs = max_jobs

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = planned_jobs(config)
        checked = jobs[: self.max_jobs]
        problems = [
            f"job {index} ({' '.join(overrides) or 'no overrides'}): {line}"
            for index, overrides in enumerate(checked)
            for line in _job_problems(config, overrides)
        ]
        skipped = f" (the first {len(checked)} of {len(jobs)})" if len(jobs) > len(checked) else ""
        if problems:
            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            print(
                f"error: {len(checked)} planned jobs checked{skipped}; nothing was run. Fix the "
                "values above (check=true checks a sweep without running it).",
                file=sys.stderr,
            )
            sys.exit(1)
        log.info("sweep: %d planned jobs checked%s", len(checked), skipped)
        if config.get("check"):
            print(f"check: {len(checked)} planned jobs checked{skipped}; nothing was run.")
            sys.exit(0)


def planned_jobs(config: DictConfig) -> list[list[str]]:
    """The overrides of each job a multirun's sweeper plans (see :class:`CheckJobsFirst`)."""
    hydra = config.hydra
    params = hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += [str(override) for override in hydra.overrides.task]
    overrides = OverridesParser.create().parse_overrides(arguments)
    if str(hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return basic_sweeper_jobs(overrides)
    values = {override.get_key_element(): _values(override) for override in overrides}
    first = {key: options[0] for key, options in values.items()}
    jobs = [first]
    for key, options in values.items():
        jobs += [{**first, key: option} for option in options[1:]]
    return [[f"{key}={value}" for key, value in job.items()] for job in jobs]


def _values(override: Override) -> list[str]:
    """The values of one override to check: each of a discrete sweep, both ends of an
    interval, or its one value."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return [str(sweep.start), str(sweep.end)]
    return [override.get_value_element_as_str()]


def _job_problems(config: DictConfig, overrides: list[str]) -> list[str]:
    """The problems of one planned job, composed as its launcher would compose it."""
    loader = GlobalHydra.instance().config_loader()
    return config_problems(
        lambda: loader.load_sweep_config(config, overrides), devices=_runs_here(config)
    )


def _runs_here(config: DictConfig) -> bool:
    """Whether the multirun's launcher runs its jobs on this machine."""
    launcher = str(config.hydra.launcher.get("_target_", ""))
    return launcher.endswith(("BasicLauncher", "JoblibLauncher"))


class SweepSummary(Callback):
    """Write ``summary.csv`` into the sweep folder: a row per job, a column per override
    and per final metric, plus ``status`` (COMPLETED, FAILED or INCOMPLETE) and ``error``."""

    def __init__(self, filename: str = "summary.csv") -> None:
        self.filename = filename

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.mode != RunMode.MULTIRUN:
            return
        record: dict[str, Any] = {
            "job": hydra.job.get("num"),
            "status": job_return.status.name,
            "overrides": list(hydra.overrides.task),
            "error": None,
        }
        if job_return.status == JobStatus.FAILED:
            record["error"] = one_line(failed_job_exception(job_return))
        folder = RunFolder(hydra.runtime.output_dir)
        _write_text(folder.status_file, json.dumps(record, indent=2))
        write_summary(Path(hydra.sweep.dir), self.filename)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_summary(Path(config.hydra.sweep.dir), self.filename)
        if path is not None:
            log.info("sweep summary: %s", path)


def job_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """One flat record per job folder of a sweep: job, status, overrides, metrics, output_dir."""
    records = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        folder = RunFolder(job_dir)
        if folder.status_file.is_file():
            status = json.loads(folder.status_file.read_text())
        elif folder.overrides_file.is_file():  # started, never finished (killed, or running)
            overrides = OmegaConf.to_container(OmegaConf.load(folder.overrides_file))
            status = {"job": job_dir.name, "status": "INCOMPLETE", "overrides": overrides}
        else:
            continue
        record: dict[str, Any] = {
            "job": status.get("job", job_dir.name),
            "status": status["status"],
        }
        for override in status.get("overrides", []):
            key, _, value = override.partition("=")
            record[key.lstrip("+~")] = value
        metrics = folder.metrics()
        if metrics is not None:
            flat = metrics.to_json()
            record.update({k: v for k, v in flat.items() if k not in NOT_RESULTS})
        record["error"] = status.get("error")
        record["output_dir"] = str(job_dir)
        records.append(record)
    return sorted(records, key=_job_order)


def write_summary(sweep_dir: Path, filename: str = "summary.csv") -> Path | None:
    """Rewrite the sweep's summary table; ``None`` when no job has started yet."""
    records = job_records(sweep_dir) if sweep_dir.is_dir() else []
    if not records:
        return None
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    # identity first, paths and errors last, overrides and metrics in between
    last = ["error", "output_dir"]
    columns = [c for c in columns if c not in last] + last
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    path = sweep_dir / filename
    _write_text(path, buffer.getvalue())
    return path


def one_line(error: BaseException) -> str:
    """An exception as one table cell: its message, or the last line of a worker's traceback."""
    lines = [line.strip() for line in user_message(error).splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1]  # e.g. a DDP worker's error, re-raised with its traceback as text
    return f"{type(error).__name__}: {' '.join(lines)}"


def _job_order(record: dict[str, Any]) -> tuple[int, str]:
    job = str(record["job"])
    return (int(job), job) if job.isdigit() else (1 << 30, job)


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically, so readers never see half a file."""
    atomic_save(lambda file: file.write(text.encode()), path)
