"""Reconstruction quality at a fixed number of latent floats, next to PCA.

One pipeline with two modes (:data:`QUICK`, :data:`FULL`):

* the plan: every named config at every latent size is one run folder,
  ``<runs>/<mode>/<config>/<floats>/`` (``quality``, or ``quality_full`` for full-data runs
  long enough to outlive a session). The benchmark sets
  ``model.latent_channels`` from the config's latent grid (a size that is no whole number of
  channels is left out), unless the config's overrides hold the placeholder ``{floats}``
  (``experiment=quality_{floats}``): they are then formatted per size and set the size
  themselves, which the plan checks;
* the launch: one ``python -m autoencoder.train`` run per folder, resumed from its
  ``last.ckpt`` while it has not finished the asked epochs; a finished one is not trained
  again;
* the reader: a run folder as it stands (:class:`~autoencoder.run_folder.RunFolder`); a
  stopped run's test figures come from evaluating its ``last.ckpt``
  (``python -m autoencoder.evaluate``), so ``--from`` summarises runs at any time;
* one table writer, the mode choosing its columns (the full mode adds the training images,
  batch, steps, status and machine) and, for the full mode, the learning curves
  (validation PSNR per epoch; PCA's and the UvA tutorial's test PSNR across).

PCA with as many components as the latent has floats, fitted on the training split of the
first config, is the linear baseline (:mod:`autoencoder.benchmarks.baselines`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from autoencoder.benchmarks.baselines import (
    PUBLIC_REPORT,
    UVA_LABEL,
    UVA_REFERENCE,
    epochs_to_reach,
    extrapolation_cell,
    pca_baseline,
    psnr,
    split_images,
    uva_note,
)
from autoencoder.benchmarks.tables import Table
from autoencoder.checkpointing import read_checkpoint
from autoencoder.cli import check_commands, job_command, launch
from autoencoder.config import compose_config, instantiate
from autoencoder.errors import ConfigError
from autoencoder.run_folder import RunFolder, RunMetrics

# In a config's overrides: the latent size of the run; the config then sets it itself.
PLACEHOLDER = "{floats}"
# the budget of every run without --epochs, but for a recipe's (its own trainer.max_epochs)
DEFAULT_EPOCHS = 20
# Data settings that change how batches are made, not which images are in the split.
LOADING_KEYS = (
    "batch_size",
    "num_workers",
    "pin_memory",
    "on_device",
    "random_crop",
    "horizontal_flip",
)


# --------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Layout:
    """The latent grid of a config: floats per image = channels x height x width."""

    height: int
    width: int

    def channels(self, floats: int) -> int | None:
        """The channels that give ``floats`` floats per image, if a whole number does."""
        area = self.height * self.width
        return floats // area if floats % area == 0 and floats >= area else None


@dataclass(frozen=True)
class Composed:
    """What the plan reads of a config composed with its overrides."""

    layout: Layout
    latent_channels: int
    data: dict[str, Any]  # the data settings that decide the split (for PCA's note)

    @classmethod
    def of(cls, overrides: Sequence[str]) -> Composed:
        """The latent grid (image size over the encoder's reduction) and data of a config."""
        cfg = compose_config("train", *overrides)
        cfg.encoder.weights = None
        encoder = instantiate(cfg.encoder)
        _, height, width = instantiate(cfg.data).image_shape
        data = OmegaConf.to_container(cfg.data, resolve=False)
        return cls(
            Layout(height // encoder.reduction, width // encoder.reduction),
            int(cfg.model.latent_channels),
            {key: value for key, value in data.items() if key not in LOADING_KEYS},
        )


@dataclass(frozen=True)
class PlannedRun:
    """One config at one latent size: the run's overrides (``model.latent_channels`` among
    them where the benchmark sets it) and its folder; ``recipe``: the config set the size
    itself (:data:`PLACEHOLDER`), and with it its length."""

    config: str
    floats: int
    overrides: tuple[str, ...]
    composed: Composed
    folder: RunFolder
    recipe: bool = False

    def budget(self, epochs: int | None) -> int | None:
        """The epochs asked, or without them a recipe's own (``None``), else the default."""
        if epochs is not None:
            return epochs
        return None if self.recipe else DEFAULT_EPOCHS


def plan(
    configs: Mapping[str, Sequence[str]], floats: Sequence[int], runs: Path, mode: Mode
) -> list[PlannedRun]:
    """Every config at every latent size it can have, as a :class:`PlannedRun` under
    ``runs/<mode>/``; a config whose overrides hold :data:`PLACEHOLDER` must compose each
    size itself (a :class:`ConfigError` saying so when it does not), and every size in
    ``floats`` must be reached by at least one config (or be the public report's, whose row
    the table holds)."""
    planned = []
    grids: dict[str, Layout] = {}
    for name, overrides in configs.items():
        templated = any(PLACEHOLDER in override for override in overrides)
        composed = None if templated else Composed.of(overrides)
        if composed is not None:
            grids[name] = composed.layout
        for size in floats:
            if templated:
                sized = tuple(o.replace(PLACEHOLDER, str(size)) for o in overrides)
                composed = Composed.of(sized)
                _check_size(name, sized, composed, size)
            else:
                channels = composed.layout.channels(size)
                if channels is None:
                    continue
                sized = (*overrides, f"model.latent_channels={channels}")
            folder = RunFolder(runs / mode.name / name / str(size))
            planned.append(PlannedRun(name, size, sized, composed, folder, templated))
    # the public report's size has its row without a run of ours
    unreached = sorted(set(floats) - {run.floats for run in planned} - {PUBLIC_REPORT["floats"]})
    if unreached:
        raise ConfigError(_unreached_message(unreached, grids))
    return planned


def _unreached_message(sizes: Sequence[int], grids: Mapping[str, Layout]) -> str:
    """No planned config reaches ``sizes``: the sizes each config's latent grid can have."""
    reachable = "; ".join(
        f"--config {name}'s latent grid is {grid.height} x {grid.width}: multiples of "
        f"{area} ({area}, {2 * area}, {4 * area}, ...)"
        for name, grid in grids.items()
        for area in (grid.height * grid.width,)
    )
    return (
        f"--floats {' '.join(map(str, sizes))}: no config reaches this latent size; {reachable}. "
        "Pick sizes among those, or add a --config with another grid (e.g. encoder.depth=N)."
    )


def _check_size(name: str, overrides: Sequence[str], composed: Composed, size: int) -> None:
    layout, channels = composed.layout, composed.latent_channels
    found = channels * layout.height * layout.width
    if found != size:
        fit = layout.channels(size)
        grid = f"{layout.height} x {layout.width}"
        fix = (
            f"model.latent_channels={fit} (its latent grid is {grid})"
            if fit is not None
            else f"a latent grid that {size} floats fill ({grid} does not)"
        )
        raise ConfigError(
            f"--config {name}: {' '.join(overrides)} gives {channels} x {layout.height} x "
            f"{layout.width} = {found} latent floats, not {size}. With {PLACEHOLDER} in its "
            f"overrides the config sets the latent size itself: make it set {fix}."
        )


# ------------------------------------------------------------------------------- launch
def train_command(run: PlannedRun, epochs: int | None) -> list[str]:
    """``python -m autoencoder.train`` of one planned run, resumed from its ``last.ckpt``
    when it has one; ``epochs`` ``None`` keeps the config's own ``trainer.max_epochs`` (a
    recipe such as ``experiment=quality_{floats}`` plans its schedule over it)."""
    last = run.folder.last_checkpoint
    return job_command(
        "train",
        *run.overrides,
        "logger=csv",
        *([f"trainer.max_epochs={epochs}"] if epochs is not None else []),
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run.folder.path}",
        *([f"ckpt_path={last}"] if last.is_file() else []),
    )


def trained_epochs(folder: RunFolder) -> int:
    """The epochs of the run's last finished fit; 0 when none."""
    metrics = folder.metrics()
    return int(metrics.epochs or 0) if metrics is not None else 0


def needs_training(folder: RunFolder, epochs: int | None) -> bool:
    """Fewer than ``epochs`` epochs finished, or, with ``epochs`` ``None`` (the config's own
    length), no finished fit yet."""
    return not folder.is_finished() if epochs is None else trained_epochs(folder) < epochs


# ------------------------------------------------------------------------------- reader
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


def read_run(run: PlannedRun) -> Row | None:
    """A planned run's folder as it stands; ``None`` before its first epoch ended."""
    folder = run.folder
    metrics, last = folder.metrics(), folder.last_checkpoint
    if metrics is None and not last.is_file():
        return None
    config = folder.config()
    curve = folder.val_curve()
    # finished: metrics.json of the run's whole curve (not of a shorter run extended since)
    finished = metrics is not None and (metrics.epochs is None or metrics.epochs >= len(curve))
    seconds, steps = _progress(last) if last.is_file() else (math.nan, None)
    if finished:
        seconds = metrics.fit_seconds if metrics.fit_seconds is not None else seconds
        machine = metrics.machine or ""
    else:
        metrics, machine = _evaluate_last(folder), ""
    started_from = config.get("init_from")
    layout = run.composed.layout
    return Row(
        config=run.config,
        latent=f"{config.model.latent_channels} x {layout.height} x {layout.width}",
        floats=run.floats,
        batch_size=int(config.data.batch_size),
        epochs=len(curve),
        steps=steps,
        finished=finished,
        mse=metrics.test["test/mse"],
        psnr=metrics.test["test/psnr"],
        ssim=metrics.test["test/ssim"],
        fit_seconds=seconds,
        machine=machine,
        val_psnr=curve,
        started_from=started_from,
        epochs_before=_epochs_trained(started_from) if started_from else 0,
    )


def _evaluate_last(folder: RunFolder) -> RunMetrics:
    """Test metrics of a stopped run's ``last.ckpt`` (evaluated again when it is newer)."""
    last, evaluation = folder.last_checkpoint, folder.evaluation
    record = evaluation.metrics_file
    if not record.is_file() or record.stat().st_mtime < last.stat().st_mtime:
        launch(
            job_command(
                "evaluate", f"ckpt_path={last}", "probe=false", f"hydra.run.dir={evaluation.path}"
            )
        )
    return evaluation.metrics()


def _progress(checkpoint: Path) -> tuple[float, int]:
    """The fit's wall time so far (the ``Timer`` state a checkpoint keeps) and its steps."""
    state = read_checkpoint(checkpoint)
    states = state.get("callbacks", {})
    timer = next((v for k, v in states.items() if k.startswith("Timer")), {})
    return float(timer.get("time_elapsed", {}).get("train", math.nan)), int(state["global_step"])


def _epochs_trained(checkpoint: str) -> int:
    """Epochs behind a checkpoint (0 when the file is gone)."""
    return int(read_checkpoint(checkpoint)["epoch"]) + 1 if Path(checkpoint).is_file() else 0


def _shown(path: str) -> str:
    """``path`` relative to the working folder when it lies under it."""
    resolved, here = Path(path).resolve(), Path.cwd().resolve()
    return str(resolved.relative_to(here)) if resolved.is_relative_to(here) else path


# -------------------------------------------------------------------------------- table
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


def run(
    configs: Mapping[str, Sequence[str]],
    floats: Sequence[int],
    epochs: int | None,
    runs: Path,
    output: Path,
    full: bool = False,
    train: bool = True,
) -> Table:
    """Train or resume (unless ``train`` is false) each config at each latent size under
    ``runs``, fit PCA, and write the mode's table (``quality.csv``/``.md``, or
    ``quality_full.csv``/``.md`` and ``quality_full_curves.png`` with ``full``) into
    ``output``."""
    mode = FULL if full else QUICK
    planned = plan(configs, floats, runs, mode)
    if train:
        to_train = [
            train_command(run, run.budget(epochs))
            for run in planned
            if needs_training(run.folder, run.budget(epochs))
        ]
        check_commands(to_train)
        for command in to_train:
            launch(command)
    rows = [row for row in map(read_run, planned) if row is not None]
    if not rows:
        raise ConfigError(
            f"no runs under {runs / mode.name}"
            + (": train them (without --from)." if not train else ".")
        )
    train_images, test_images = split_images(planned[0].overrides)
    pca = pca_baseline(train_images, test_images, sorted({r.floats for r in rows}))
    table = quality_table(rows, pca, len(train_images), mode, pca_note(planned))
    table.write(output, mode.name)
    if mode.curves:
        from autoencoder.benchmarks.plots import quality_curves

        curves: dict[int, dict[str, list[float]]] = {}
        first_epochs: dict[str, int] = {}
        for row in rows:
            label = f"{row.config} ({row.latent})"
            curves.setdefault(row.floats, {})[label] = row.val_psnr
            first_epochs[label] = row.epochs_before + 1
        quality_curves(
            curves,
            {size: pca[size]["psnr"] for size in curves},
            output / mode.curves,
            first_epochs,
            {UVA_LABEL: UVA_REFERENCE},
        )
    return table
