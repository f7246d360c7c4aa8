"""Reconstruction quality at a fixed number of latent floats, next to PCA.

One pipeline with two modes (:data:`~autoencoder.benchmarks.quality_table.QUICK`,
:data:`~autoencoder.benchmarks.quality_table.FULL`):

* the plan and the launch (:mod:`autoencoder.benchmarks.quality_plan`): every named config
  at every latent size is one run folder, ``<runs>/<mode>/<config>/<floats>/`` (``quality``,
  or ``quality_full`` for full-data runs long enough to outlive a session), trained by one
  ``python -m autoencoder.train`` run; a finished one is not trained again;
* the reader (here): a run folder as it stands
  (:class:`~autoencoder.run_folder.RunFolder`); a stopped run's test figures come from
  evaluating its ``last.ckpt`` (``python -m autoencoder.evaluate``), so ``--from``
  summarises runs at any time;
* one table writer (:mod:`autoencoder.benchmarks.quality_table`), the mode choosing its
  columns (the full mode adds the training images, batch, steps, status and machine) and,
  for the full mode, the learning curves (validation PSNR per epoch; PCA's and the UvA
  tutorial's test PSNR across).

PCA with as many components as the latent has floats, fitted on the training split of the
first config, is the linear baseline (:mod:`autoencoder.benchmarks.baselines`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from autoencoder.benchmarks.baselines import (
    UVA_LABEL,
    UVA_REFERENCE,
    pca_baseline,
    split_images,
)
from autoencoder.benchmarks.quality_plan import PlannedRun, needs_training, plan, train_command
from autoencoder.benchmarks.quality_table import FULL, QUICK, Row, pca_note, quality_table
from autoencoder.benchmarks.tables import Table
from autoencoder.checkpointing import checkpoint_epochs, read_checkpoint
from autoencoder.cli import check_commands, job_command, launch
from autoencoder.errors import ConfigError
from autoencoder.run_folder import RunFolder, RunMetrics


# ------------------------------------------------------------------------------- reader
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
    grid = run.composed.grid
    return Row(
        config=run.config,
        latent=f"{config.model.latent_channels} x {grid.height} x {grid.width}",
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
        epochs_before=_epochs_before(started_from),
    )


def _epochs_before(started_from: str | None) -> int:
    """Epochs behind the checkpoint a run started from (0 without one, or when the file is
    gone)."""
    if not started_from or not Path(started_from).is_file():
        return 0
    return checkpoint_epochs(started_from)


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
    planned = plan(configs, floats, runs / mode.name)
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
