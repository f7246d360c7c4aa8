"""What a run writes, and where: the one definition of a run folder.

A training run (``scripts/train.py``, ``scripts/pretrain_encoder.py``) writes, under its
output folder (``hydra.run.dir``, or a multirun's job folder)::

    metrics.json            the final record (:class:`RunMetrics`), on rank 0, at the end
    .hydra/config.yaml      the composed config (Hydra), from which the model is rebuilt
    .hydra/overrides.yaml   the command line's overrides (Hydra)
    csv/metrics.csv         the logged values per step and epoch (logger=csv)
    checkpoints/            best-epochNNN.ckpt, last.ckpt, start.ckpt (do no harm)
    reconstructions/        reconstruction grids (without W&B)
    evaluation/             scripts/evaluate.py's output when a benchmark evaluates the run
    job_status.json         a multirun job's status (the sweep summary)

Every job writes through :class:`RunFolder` and every reader (evaluate, encode, sweeps,
benchmarks, examples, notebooks) reads through it. The config files only produce this
layout (``paths.output_dir``, the csv logger's ``name: csv``, the checkpoints' ``dirpath``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autoencoder.atomic import atomic_save

METRICS_SCHEMA = 2


@dataclass
class RunMetrics:
    """``metrics.json``: what a finished job reports, as one flat JSON object.

    Version 2 added ``schema_version``, ``best_epoch`` and ``start``; a file without a
    version is version 1 and reads the same, its missing entries ``None``.

    Attributes:
        test: the final test metrics of the best checkpoint (``test/mse``, ``test/psnr``,
            ...), ``None`` where not computed.
        best_ckpt: the checkpoint the test used.
        best_epoch: the training epochs behind it (0: the start, which no epoch beat).
        start: the validation scores of the model the run started from (do no harm), when
            it was scored.
        epochs: epochs trained in all (a resumed run counts every part).
        fit_seconds: the fit's wall time (every part of a resumed run).
        machine: what it trained on.
        latent_floats, compression_ratio: the bottleneck, per image.
        transition_epoch, transition_step: where phase 2 of fine-tuning began (``None``:
            never).
        monitored: the metrics a sweeper reads (``val/psnr``), of the model the run returns
            (its best checkpoint, validated again when that is not the last epoch's).
        extra: what else the job reports (a pretraining run's classifier and weights file,
            an evaluation's images and probe; ``last_epoch``: the last epoch's ``val/psnr``
            when the run returns another checkpoint).
    """

    test: dict[str, float | None] = field(default_factory=dict)
    best_ckpt: str | None = None
    best_epoch: int | None = None
    start: dict[str, float] | None = None
    epochs: int | None = None
    fit_seconds: float | None = None
    machine: str | None = None
    latent_floats: int | None = None
    compression_ratio: float | None = None
    transition_epoch: int | None = None
    transition_step: int | None = None
    monitored: dict[str, float | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = METRICS_SCHEMA

    _MAPPINGS = ("test", "monitored", "extra")

    def to_json(self) -> dict[str, Any]:
        """The flat object ``metrics.json`` holds: ``test/*`` and the monitored metrics as
        top-level keys, beside the other entries."""
        flat: dict[str, Any] = {"schema_version": self.schema_version, **self.test}
        for entry in fields(self):
            if entry.name not in (*self._MAPPINGS, "schema_version"):
                flat[entry.name] = getattr(self, entry.name)
        return {**flat, **self.monitored, **self.extra}

    @classmethod
    def from_json(cls, flat: Mapping[str, Any]) -> RunMetrics:
        scalars = {f.name for f in fields(cls)} - set(cls._MAPPINGS)
        metrics = cls(schema_version=int(flat.get("schema_version", 1)))
        for key, value in flat.items():
            if key.startswith("test/"):
                metrics.test[key] = value
            elif key.startswith(("val/", "train/")):
                metrics.monitored[key] = value
            elif key in scalars and key != "schema_version":
                setattr(metrics, key, value)
            elif key != "schema_version":
                metrics.extra[key] = value
        return metrics

    def get(self, key: str, default: Any = None) -> Any:
        """An entry of the flat object (``metrics.get("test/psnr")``)."""
        return self.to_json().get(key, default)


class _Under:
    """A file or folder of every run, as an attribute of :class:`RunFolder`: on a run, the
    path under its folder (``run.metrics_file``); on the class, the relative path
    (``RunFolder.config_file``: ``.hydra/config.yaml``)."""

    def __init__(self, relative: str) -> None:
        self.relative = Path(relative)

    def __get__(self, run: RunFolder | None, owner: type | None = None) -> Path:
        return self.relative if run is None else run.path / self.relative


@dataclass(frozen=True)
class RunFolder:
    """A run's output folder: where each thing it writes lives, and how to read it back."""

    path: Path

    metrics_file = _Under("metrics.json")
    config_file = _Under(".hydra/config.yaml")
    overrides_file = _Under(".hydra/overrides.yaml")
    csv_log = _Under("csv/metrics.csv")
    checkpoints = _Under("checkpoints")
    last_checkpoint = _Under("checkpoints/last.ckpt")
    reconstructions = _Under("reconstructions")
    status_file = _Under("job_status.json")

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path) -> RunFolder:
        """The run that wrote ``ckpt`` (``<run>/checkpoints/<file>.ckpt``)."""
        return cls(Path(ckpt).absolute().parent.parent)

    @property
    def evaluation(self) -> RunFolder:
        """The folder ``python -m autoencoder.evaluate`` writes into when a benchmark
        evaluates the run."""
        return RunFolder(self.path / "evaluation")

    # ------------------------------------------------------------------ read and write
    def is_finished(self) -> bool:
        return self.metrics_file.is_file()

    def write_metrics(self, metrics: RunMetrics | Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` atomically (a reader never sees half of it): a job's
        :class:`RunMetrics`, or another job's flat record (an evaluation's), versioned."""
        flat = (
            metrics.to_json()
            if isinstance(metrics, RunMetrics)
            else {"schema_version": METRICS_SCHEMA, **metrics}
        )
        text = json.dumps(flat, indent=2) + "\n"
        atomic_save(lambda file: file.write(text.encode()), self.metrics_file)
        return self.metrics_file

    def metrics(self) -> RunMetrics | None:
        """The run's ``metrics.json``; ``None`` before it finished."""
        if not self.metrics_file.is_file():
            return None
        return RunMetrics.from_json(json.loads(self.metrics_file.read_text()))

    def config(self) -> DictConfig:
        """The run's composed config (``.hydra/config.yaml``)."""
        return OmegaConf.load(self.config_file)

    def overrides(self) -> dict[str, str]:
        """The run's command-line overrides, key to value (``+`` and ``~`` dropped)."""
        if not self.overrides_file.is_file():
            return {}
        items = OmegaConf.to_container(OmegaConf.load(self.overrides_file))
        pairs = (str(item).partition("=") for item in items or [])
        return {key.lstrip("+~"): value for key, _, value in pairs}

    def log_rows(self) -> Iterator[dict[str, str]]:
        """The rows of ``csv/metrics.csv`` (empty when the run logged no csv)."""
        if not self.csv_log.is_file():
            return
        with self.csv_log.open(newline="") as file:
            yield from csv.DictReader(file)

    def val_curve(self, metric: str = "val/psnr") -> list[float]:
        """``metric`` after each epoch's validation, in epoch order (the last value logged
        for an epoch, so a resumed run's log reads as one curve). The start's score (logged
        at step 0 without an epoch) is not an epoch: see :meth:`start_score`."""
        per_epoch = {
            int(row["epoch"]): float(row[metric])
            for row in self.log_rows()
            if row.get(metric) and row.get("epoch")
        }
        return [per_epoch[epoch] for epoch in sorted(per_epoch)]

    def start_score(self, metric: str = "val/psnr") -> float | None:
        """The score of the model the run started from, if it was scored."""
        metrics = self.metrics()
        if metrics is not None and metrics.start and metric in metrics.start:
            return float(metrics.start[metric])
        row = next((r for r in self.log_rows() if r.get(metric) and not r.get("epoch")), None)
        return float(row[metric]) if row is not None else None
