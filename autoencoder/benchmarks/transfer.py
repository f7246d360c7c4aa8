"""The transfer study: does a pretrained encoder give a higher start, a steeper slope and a
higher asymptote than training from scratch, and which fine-tuning strategy keeps them?

Each regime (a number of training images) runs the strategies as multiruns of
``scripts/train.py``, as a user would, into ``<output>/transfer/<images>/<group>/``:

* ``scratch``: a random encoder trained with the rest (``encoder.weights=null finetune=full``);
* ``full``: the pretrained encoder, everything trainable at one rate from step 0;
* ``two_phase``: the default, frozen encoder first, then discriminative rates;
* ``epoch``: the whole encoder unfrozen at a fixed epoch at a tenth of the decoder's rate, as
  Lightning's ``BackboneFinetuning`` does;
* ``frozen``: the encoder never trains.

The tables and curves are then read back from the job folders (``metrics.json`` and
``csv/metrics.csv``), so ``--from`` can summarise finished sweeps again without training.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from autoencoder.benchmarks.tables import Table

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
# (folder, overrides of the sweep): scratch, full and two-phase with several seeds
GROUPS = (
    ("pretrained", ("finetune=two_phase,full",)),
    ("single_seed", ("finetune=epoch,frozen",)),
    ("scratch", ("finetune=full", "encoder.weights=null")),
)
STRATEGIES = ("scratch", "full", "two_phase", "epoch", "frozen")


def sweep_commands(
    images: int,
    overrides: Sequence[str],
    data_dir: str,
    encoder_weights: str,
    epochs: int,
    seeds: int,
    output: Path,
) -> list[list[str]]:
    """The ``scripts/train.py -m`` command lines of one regime."""
    base = [
        *overrides,
        "data=arrays",
        f"data.path={data_dir}",
        f"data.train_subset={images}",
        f"encoder.weights={encoder_weights}",
        "logger=csv",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
    ]
    commands = []
    for folder, sweep in GROUPS:
        seed_list = "1" if folder == "single_seed" else ",".join(map(str, range(1, seeds + 1)))
        sweep_dir = output / "transfer" / str(images) / folder
        commands.append(
            [
                sys.executable,
                str(SCRIPT),
                "-m",
                *base,
                *sweep,
                f"seed={seed_list}",
                f"hydra.sweep.dir={sweep_dir}",
            ]
        )
    return commands


@dataclass
class Job:
    """One finished training job of the study."""

    strategy: str
    seed: int
    val_psnr: list[float]  # after each epoch
    test_psnr: float
    transition_epoch: int | None
    transition_step: int | None
    fit_seconds: float


def read_job(folder: Path) -> Job | None:
    metrics_file, log = folder / "metrics.json", folder / "csv" / "metrics.csv"
    if not metrics_file.is_file() or not log.is_file():
        return None
    overrides = dict(
        item.split("=", 1) for item in OmegaConf.load(folder / ".hydra" / "overrides.yaml")
    )
    scratch = overrides.get("encoder.weights") == "null"
    metrics = json.loads(metrics_file.read_text())
    with log.open(newline="") as file:
        per_epoch = {
            int(row["epoch"]): float(row["val/psnr"])
            for row in csv.DictReader(file)
            if row.get("val/psnr")
        }
    return Job(
        strategy="scratch" if scratch else overrides.get("finetune", "two_phase"),
        seed=int(overrides.get("seed", 0)),
        val_psnr=[per_epoch[epoch] for epoch in sorted(per_epoch)],
        test_psnr=metrics["test/psnr"],
        transition_epoch=metrics.get("transition_epoch"),
        transition_step=metrics.get("transition_step"),
        fit_seconds=metrics.get("fit_seconds", math.nan),
    )


def read_regime(folder: Path) -> dict[str, list[Job]]:
    """Every finished job under ``folder`` (a regime's sweeps), by strategy."""
    jobs: dict[str, list[Job]] = defaultdict(list)
    for metrics in sorted(folder.glob("*/*/metrics.json")):
        job = read_job(metrics.parent)
        if job is not None:
            jobs[job.strategy].append(job)
    return dict(jobs)


def mean_spread(values: Sequence[float]) -> str:
    """``mean ± standard deviation`` over seeds, or the value of a single seed."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def epochs_to(curve: Sequence[float], threshold: float) -> int | None:
    """The first epoch (counted from 1) whose validation PSNR reaches ``threshold``."""
    return next((epoch for epoch, value in enumerate(curve, 1) if value >= threshold), None)


def transition_dip(job: Job) -> float | None:
    """Val PSNR after the first epoch of phase 2 minus the one before the transition
    (``None`` without a transition inside the run: from scratch, full, frozen)."""
    epoch = job.transition_epoch
    if not job.transition_step or epoch is None or epoch + 1 >= len(job.val_psnr):
        return None
    return job.val_psnr[epoch + 1] - job.val_psnr[epoch]


def regime_table(images: int, jobs: dict[str, list[Job]], margin: float = 1.0) -> Table:
    """Start, slope, asymptote, dip and wall time of each strategy in one regime."""
    scratch_final = [job.val_psnr[-1] for job in jobs.get("scratch", [])]
    threshold = statistics.mean(scratch_final) - margin if scratch_final else None
    table = Table(
        title=f"transfer, {images} training images",
        columns=(
            "strategy",
            "seeds",
            "start: val PSNR after epoch 1",
            f"epochs to {threshold:.2f} dB" if threshold is not None else "epochs to threshold",
            "test PSNR",
            "transition dip (dB)",
            "wall time (s)",
        ),
    )
    for strategy in STRATEGIES:
        runs = sorted(jobs.get(strategy, []), key=lambda job: job.seed)
        if not runs:
            continue
        reached = [epochs_to(job.val_psnr, threshold) for job in runs] if threshold else []
        dips = [d for d in map(transition_dip, runs) if d is not None]
        table.add(
            **{
                "strategy": strategy,
                "seeds": len(runs),
                table.columns[2]: mean_spread([job.val_psnr[0] for job in runs]),
                table.columns[3]: ", ".join("-" if e is None else str(e) for e in reached) or "-",
                "test PSNR": mean_spread([job.test_psnr for job in runs]),
                "transition dip (dB)": mean_spread(dips),
                "wall time (s)": mean_spread([job.fit_seconds for job in runs]),
            }
        )
    if threshold is not None:
        table.notes.append(
            f"slope: the epoch at which each seed's validation PSNR first reaches {threshold:.2f} "
            f"dB, {margin:g} dB below the mean final validation PSNR of training from scratch "
            "('-': never within the budget)"
        )
    return table


def run(
    regimes: Sequence[int],
    overrides: Sequence[str],
    data_dir: str | None,
    encoder_weights: str | None,
    epochs: int,
    seeds: int,
    output: Path,
    train: bool = True,
) -> list[Table]:
    """Run (unless ``train`` is false) and summarise the study: ``transfer_<images>.csv``
    and ``.md`` per regime, and ``transfer_curves.png``."""
    if train:
        if not data_dir or not encoder_weights:
            raise SystemExit("the transfer study needs --data-dir and --encoder-weights")
        for images in regimes:
            for command in sweep_commands(
                images, overrides, data_dir, encoder_weights, epochs, seeds, output
            ):
                print("$", " ".join(command[1:]), flush=True)
                subprocess.run(command, check=True)
    tables, curves = [], {}
    for images in regimes:
        jobs = read_regime(output / "transfer" / str(images))
        if not jobs:
            raise SystemExit(f"no finished jobs under {output / 'transfer' / str(images)}")
        table = regime_table(images, jobs)
        table.write(output, f"transfer_{images}")
        tables.append(table)
        curves[images] = {s: [job.val_psnr for job in runs] for s, runs in jobs.items()}
    from autoencoder.benchmarks.plots import learning_curves

    learning_curves(curves, output / "transfer_curves.png")
    return tables
