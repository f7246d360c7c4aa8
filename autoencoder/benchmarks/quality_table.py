"""The quality benchmark's table: one row per run as it stands (:class:`Row`), beside PCA
at the same number of latent floats, with the columns and notes of the mode
(:data:`QUICK` or :data:`FULL`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoencoder.benchmarks.baselines import (
    PUBLIC_REPORT,
    epochs_to_reach,
    extrapolation_cell,
    psnr,
    uva_note,
)
from autoencoder.benchmarks.quality_plan import PlannedRun
from autoencoder.benchmarks.tables import Table


@dataclass
class Row:
    """A run as it stands: finished, or stopped after ``epochs`` epochs."""

    config: str
    latent: str
    floats: int
    batch_size: int
    epochs: int
    steps: int | None
    finished: bool
    mse: float
    psnr: float
    ssim: float
    fit_seconds: float
    machine: str
    val_psnr: list[float]
    # init_from: the checkpoint the run started from, and the epochs that one was trained
    started_from: str | None = None
    epochs_before: int = 0


@dataclass(frozen=True)
class Mode:
    """What tells the two modes apart.

    Attributes:
        name: the runs' folder under ``--runs`` and the table's file name.
        title: the table's title, before the number of training images.
        columns: the table's columns (of :func:`cells`).
        notes: the mode's own table notes, after PCA's.
        public_report: add the row of :data:`PUBLIC_REPORT`.
        curves: the file name of the learning curves' figure, if the mode draws it.
    """

    name: str
    title: str
    columns: tuple[str, ...]
    notes: tuple[str, ...] = ()
    public_report: bool = False
    curves: str | None = None


FORMATS = {
    "test MSE": 5,
    "PCA MSE": 5,
    "PSNR (dB)": 2,
    "PCA PSNR (dB)": 2,
    "PSNR - PCA (dB)": 2,
    "wall time (s)": 0,
    "wall time (h)": 2,
    "epochs to PCA": 0,
}
STOPPED = "stopped (last.ckpt)"
STOPPED_NOTE = (
    "stopped: the run's last.ckpt, evaluated on the test set (python -m autoencoder.evaluate); "
    "the run resumes from it with the same command."
)
QUICK = Mode(
    name="quality",
    title="quality: test set",
    columns=(
        *("config", "latent", "floats", "epochs", "test MSE", "PSNR (dB)", "SSIM"),
        *("wall time (s)", "PCA MSE", "PCA PSNR (dB)", "PCA SSIM", "PSNR - PCA (dB)"),
        "epochs to PCA",
    ),
    notes=(
        "epochs to PCA: the epoch whose validation PSNR reached PCA's test PSNR, or beyond "
        "the budget, where a line through validation PSNR against log(epoch) over the "
        "second half of the run would reach it ('> N': beyond 100 times the budget).",
    ),
    public_report=True,
)
FULL = Mode(
    name="quality_full",
    title="quality, full data: test set",
    columns=(
        *("config", "latent", "floats", "train images", "batch", "epochs", "steps", "status"),
        *("test MSE", "PSNR (dB)", "SSIM", "wall time (h)", "machine", "PCA PSNR (dB)"),
        "PSNR - PCA (dB)",
    ),
    notes=(STOPPED_NOTE,),
    curves="quality_full_curves.png",
)


def cells(row: Row, pca: Mapping[str, float], train_images: int) -> dict[str, Any]:
    """Every column either mode shows, for one run."""
    return {
        "config": row.config,
        "latent": row.latent,
        "floats": row.floats,
        "train images": train_images,
        "batch": row.batch_size,
        "epochs": row.epochs,
        "steps": row.steps,
        "status": "finished" if row.finished else STOPPED,
        "test MSE": row.mse,
        "PSNR (dB)": row.psnr,
        "SSIM": row.ssim,
        "wall time (s)": row.fit_seconds,
        "wall time (h)": row.fit_seconds / 3600,
        "machine": row.machine or "-",
        "PCA MSE": pca["mse"],
        "PCA PSNR (dB)": pca["psnr"],
        "PCA SSIM": pca["ssim"],
        "PSNR - PCA (dB)": row.psnr - pca["psnr"],
        "epochs to PCA": extrapolation_cell(epochs_to_reach(row.val_psnr, pca["psnr"]), row.epochs),
    }


def pca_note(planned: Sequence[PlannedRun]) -> str:
    """What PCA was fitted on: the first config's training split, and which configs (with
    other ``data.*`` settings) it is not the split of."""
    first = planned[0]
    ours = first.composed.data
    differing: dict[str, list[str]] = {}
    for run in planned:
        theirs = run.composed.data
        for key in sorted(ours.keys() | theirs.keys()):
            setting = f"data.{key}={theirs.get(key)}"
            if ours.get(key) != theirs.get(key) and setting not in differing.get(run.config, []):
                differing.setdefault(run.config, []).append(setting)
    note = (
        f"PCA: fitted on the training split of {first.config}, as many components as latent floats"
    )
    if not differing:
        return note + "; every config trains on the same split."
    others = "; ".join(f"{name}: {', '.join(keys)}" for name, keys in differing.items())
    return (
        f"{note}. Other configs set other data ({others}): their PSNR - PCA compares them "
        f"with PCA on {first.config}'s split."
    )


def quality_table(
    rows: Sequence[Row],
    pca: Mapping[int, Mapping[str, float]],
    train_images: int,
    mode: Mode,
    fitted_on: str,
) -> Table:
    """The mode's table of ``rows`` beside PCA at each size (``fitted_on``: PCA's note)."""
    table = Table(
        title=f"{mode.title}, {train_images} training images",
        columns=mode.columns,
        formats={column: FORMATS[column] for column in mode.columns if column in FORMATS},
    )
    for row in sorted(rows, key=lambda r: (r.floats, r.config)):
        values = cells(row, pca[row.floats], train_images)
        table.add(**{column: values[column] for column in mode.columns})
    if mode.public_report:
        table.add(
            **{
                "config": "public report (ResNet-34)",
                "floats": PUBLIC_REPORT["floats"],
                "epochs": PUBLIC_REPORT["epochs"],
                "test MSE": PUBLIC_REPORT["mse"],
                "PSNR (dB)": psnr(PUBLIC_REPORT["mse"]),
            }
        )
    stopped = [f"{r.config} at {r.floats} floats" for r in rows if not r.finished]
    table.notes = [
        fitted_on,
        *mode.notes,
        *(
            [
                f"not finished: {', '.join(stopped)}; their figures are those of their "
                "last.ckpt, evaluated on the test set, and the same command resumes them."
            ]
            if stopped and "status" not in mode.columns
            else []
        ),
        *(
            f"{r.config}, {r.floats} floats: started from the weights of {_shown(r.started_from)} "
            f"({r.epochs_before} epochs; init_from); its epochs, steps and wall time count "
            "its own training only, and its curve starts after those epochs."
            for r in rows
            if r.started_from
        ),
        uva_note(),
    ]
    return table


def _shown(path: str) -> str:
    """``path`` relative to the working folder when it lies under it."""
    resolved, here = Path(path).resolve(), Path.cwd().resolve()
    return str(resolved.relative_to(here)) if resolved.is_relative_to(here) else path
