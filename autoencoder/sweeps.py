"""Multirun bookkeeping: one sortable table of every job's status, overrides and metrics.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``conf/hydra/default.yaml``).
After each job of a multirun it records the job's status in ``<job dir>/job_status.json``
and rewrites ``<sweep dir>/summary.csv`` from every job folder, so the table is current
after every job, also when a later job fails or the sweep is interrupted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from autoencoder.atomic import atomic_save
from autoencoder.compat import failed_job_exception
from autoencoder.errors import user_message
from autoencoder.run_folder import RunFolder

log = logging.getLogger(__name__)

# metrics.json entries that are not results, or not one value: paths, the start's scores
NOT_RESULTS = ("best_ckpt", "start", "schema_version")


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
