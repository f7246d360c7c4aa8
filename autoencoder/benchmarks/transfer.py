"""The transfer study: where does a pretrained encoder give a higher start, a steeper slope,
a higher asymptote and a latent worth extracting, and with which fine-tuning strategy?

A *configuration* is an encoder geometry (cut depth, ``encoder.stem_pool``,
``encoder.input_scale``, latent channels) with the weights pretrained at that geometry
(``encoder.weights=PATH`` in its overrides). For each regime (a number of target training
images) and configuration, every strategy is trained by ``scripts/train.py`` multiruns, as
a user would, one sweep folder per seed, into
``<runs>/transfer/<images>/<config>/<pretrained|scratch>/seed<N>/``:

* ``scratch``: the same network from random initialisation (``encoder.weights=null
  finetune=full``);
* ``full``: the pretrained encoder, everything trainable at one rate from step 0;
* ``two_phase``: frozen encoder first, then discriminative rates (the defaults);
* ``frozen``: the pretrained encoder never trains (feature extraction);
* ``epoch`` (on request): the encoder unfrozen at a fixed epoch.

Every finished job is then evaluated by ``scripts/evaluate.py`` into ``<job>/evaluation/``:
test PSNR, the linear probe's accuracy on the latents (``test/probe_acc``) and, with
``--classifier-weights``, a classifier's accuracy on the reconstructions. The tables and
figures are read back from the job folders, so ``--from`` summarises finished runs again.
Sweeps and evaluations already finished are skipped, so more seeds can be added later.
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

import torch
from omegaconf import OmegaConf

from autoencoder.benchmarks.tables import Table
from autoencoder.probe import linear_probe

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
STRATEGIES = ("scratch", "full", "two_phase", "frozen", "epoch")
EVALUATION = "evaluation"


@dataclass(frozen=True)
class StudyConfig:
    """A named encoder geometry and its pretrained weights, as ``scripts/train.py``
    overrides (``encoder.weights=PATH`` among them)."""

    name: str
    overrides: tuple[str, ...]

    def scratch_overrides(self) -> tuple[str, ...]:
        kept = tuple(o for o in self.overrides if not o.startswith("encoder.weights="))
        return (*kept, "encoder.weights=null", "finetune=full")


def sweep_commands(
    images: int,
    config: StudyConfig,
    base: Sequence[str],
    strategies: Sequence[str],
    seed: int,
    runs: Path,
) -> list[tuple[Path, list[str]]]:
    """The ``scripts/train.py -m`` command lines of one regime, configuration and seed, each
    with the sweep folder it writes."""
    common = [*base, f"data.train_subset={images}", f"seed={seed}"]
    folder = runs / "transfer" / str(images) / config.name
    commands = []
    pretrained = [s for s in strategies if s != "scratch"]
    if pretrained:
        sweep = folder / "pretrained" / f"seed{seed}"
        overrides = [*config.overrides, *common, f"finetune={','.join(pretrained)}"]
        commands.append((sweep, _train_command(overrides, sweep)))
    if "scratch" in strategies:
        sweep = folder / "scratch" / f"seed{seed}"
        commands.append((sweep, _train_command([*config.scratch_overrides(), *common], sweep)))
    return commands


def _train_command(overrides: Sequence[str], sweep: Path) -> list[str]:
    return [
        sys.executable,
        str(SCRIPTS / "train.py"),
        "-m",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    ]


def evaluate_command(
    job: Path, classifier_weights: str | None, probe_train_images: int | None
) -> list[str]:
    """``scripts/evaluate.py`` on a job's best checkpoint, into ``<job>/evaluation``."""
    ckpt = json.loads((job / "metrics.json").read_text())["best_ckpt"]
    command = [
        sys.executable,
        str(SCRIPTS / "evaluate.py"),
        f"ckpt_path={ckpt}",
        f"probe_train_images={'null' if probe_train_images is None else probe_train_images}",
        f"hydra.run.dir={job / EVALUATION}",
        "num_shown=16",
        "num_worst=8",
    ]
    if classifier_weights:
        command.append(f"classifier_weights={classifier_weights}")
    return command


def _sweep_finished(sweep: Path) -> bool:
    jobs = [p for p in sweep.glob("*") if (p / ".hydra").is_dir()]
    return bool(jobs) and all((job / "metrics.json").is_file() for job in jobs)


@dataclass
class Job:
    """One finished training job of the study and its evaluation."""

    config: str
    strategy: str
    seed: int
    val_psnr: list[float]  # after each epoch
    test_psnr: float
    transition_epoch: int | None
    transition_step: int | None
    fit_seconds: float
    probe_acc: float | None
    reconstruction_acc: float | None


def read_job(folder: Path, config: str) -> Job | None:
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
    evaluation_file = folder / EVALUATION / "metrics.json"
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else {}
    return Job(
        config=config,
        strategy="scratch" if scratch else overrides.get("finetune", "two_phase"),
        seed=int(overrides.get("seed", 0)),
        val_psnr=[per_epoch[epoch] for epoch in sorted(per_epoch)],
        test_psnr=metrics["test/psnr"],
        transition_epoch=metrics.get("transition_epoch"),
        transition_step=metrics.get("transition_step"),
        fit_seconds=metrics.get("fit_seconds", math.nan),
        probe_acc=evaluation.get("test/probe_acc"),
        reconstruction_acc=evaluation.get("test/acc_reconstruction"),
    )


def read_regime(folder: Path) -> dict[tuple[str, str], list[Job]]:
    """Every finished job under ``folder`` (``<runs>/transfer/<images>``), by configuration
    and strategy."""
    jobs: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for metrics in sorted(folder.glob("*/*/seed*/*/metrics.json")):
        config = metrics.relative_to(folder).parts[0]
        job = read_job(metrics.parent, config)
        if job is not None:
            jobs[job.config, job.strategy].append(job)
    return dict(jobs)


def mean_spread(values: Sequence[float | None], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± standard deviation`` over seeds, or the value of a single seed."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def epochs_to(curve: Sequence[float], threshold: float) -> int | None:
    """The first epoch (counted from 1) whose validation PSNR reaches ``threshold``."""
    return next((epoch for epoch, value in enumerate(curve, 1) if value >= threshold), None)


def transition_change(job: Job) -> float | None:
    """Val PSNR after the first epoch of phase 2 minus the one before the transition
    (``None`` without a transition inside the run: from scratch, full, frozen)."""
    epoch = job.transition_epoch
    if not job.transition_step or epoch is None or epoch + 1 >= len(job.val_psnr):
        return None
    return job.val_psnr[epoch + 1] - job.val_psnr[epoch]


@dataclass(frozen=True)
class References:
    """What a linear method and the raw pixels give on the same split."""

    floats: int
    pca_psnr: float
    pca_probe_acc: float
    pixel_probe_acc: float


def regime_table(
    images: int,
    jobs: dict[tuple[str, str], list[Job]],
    configs: Sequence[str],
    references: References | None,
    margin: float = 1.0,
) -> Table:
    """One row per configuration and strategy: start, slope, test PSNR, probe accuracy,
    accuracy on reconstructions, transition dip, wall time (mean ± sd over seeds)."""
    table = Table(
        title=f"transfer, {images} target training images",
        columns=(
            "config",
            "strategy",
            "seeds",
            "start: val PSNR epoch 1",
            "epochs to scratch - 1 dB",
            "test PSNR",
            "probe acc (%)",
            "acc on reconstructions (%)",
            "across the transition (dB)",
            "wall time (s)",
        ),
    )
    for config in configs:
        scratch = [job.val_psnr[-1] for job in jobs.get((config, "scratch"), [])]
        threshold = statistics.mean(scratch) - margin if scratch else None
        for strategy in STRATEGIES:
            runs = sorted(jobs.get((config, strategy), []), key=lambda job: job.seed)
            if not runs:
                continue
            reached = [epochs_to(job.val_psnr, threshold) for job in runs] if threshold else []
            table.add(
                **{
                    "config": config,
                    "strategy": strategy,
                    "seeds": len(runs),
                    "start: val PSNR epoch 1": mean_spread([job.val_psnr[0] for job in runs]),
                    "epochs to scratch - 1 dB": ", ".join(
                        "-" if e is None else str(e) for e in reached
                    )
                    or "-",
                    "test PSNR": mean_spread([job.test_psnr for job in runs]),
                    "probe acc (%)": mean_spread([job.probe_acc for job in runs], 100, 1),
                    "acc on reconstructions (%)": mean_spread(
                        [job.reconstruction_acc for job in runs], 100, 1
                    ),
                    "across the transition (dB)": mean_spread(
                        [transition_change(job) for job in runs]
                    ),
                    "wall time (s)": mean_spread([job.fit_seconds for job in runs], digits=0),
                }
            )
    table.notes.append(
        f"epochs to scratch - 1 dB: the epoch at which each seed's validation PSNR first "
        f"reaches {margin:g} dB below the mean final validation PSNR of the same configuration "
        "trained from scratch ('-': never within the budget). across the transition: val PSNR "
        "after the first epoch of phase 2 minus the epoch before it (negative: a dip)."
    )
    if references is not None:
        table.notes.append(
            f"References on the same split: PCA with {references.floats} components, test "
            f"PSNR {references.pca_psnr:.2f} dB and probe accuracy "
            f"{100 * references.pca_probe_acc:.1f}%; a probe on the raw pixels "
            f"{100 * references.pixel_probe_acc:.1f}%."
        )
    return table


def reference_marks(
    overrides: Sequence[str], images: int, floats: int, probe_train_images: int | None
) -> References:
    """PCA with ``floats`` components fitted on the regime's training images (its test PSNR,
    and a probe on its coefficients), and a probe on the raw pixels; both probes fitted on
    the training images the autoencoders' probes use (see ``scripts/evaluate.py``)."""
    from autoencoder.benchmarks.quality import labelled_splits, pca_baseline, split_images

    train, test, train_labels, test_labels = labelled_splits(overrides)
    fitted_on, _ = split_images([*overrides, f"data.train_subset={images}"])
    pca = pca_baseline(fitted_on, test, [floats], keep_basis=True)[floats]
    if probe_train_images is not None and probe_train_images < len(train):
        generator = torch.Generator().manual_seed(0)  # data.split_seed, as evaluate draws
        keep = sorted(torch.randperm(len(train), generator=generator)[:probe_train_images].tolist())
        train, train_labels = train[keep], train_labels[keep]

    def project(images_: torch.Tensor) -> torch.Tensor:
        return (images_.flatten(1).double() - pca["mean"]) @ pca["basis"]

    pca_probe = linear_probe(project(train), train_labels, project(test), test_labels)
    pixel_probe = linear_probe(train, train_labels, test, test_labels)
    return References(floats, pca["psnr"], pca_probe.accuracy, pixel_probe.accuracy)


def run(
    regimes: Sequence[int],
    configs: Sequence[StudyConfig],
    base: Sequence[str],
    strategies: Sequence[str],
    seeds: int,
    classifier_weights: str | None,
    probe_train_images: int | None,
    runs: Path,
    output: Path,
    train: bool = True,
) -> list[Table]:
    """Train and evaluate (unless ``train`` is false) every missing job of the study, then
    write ``transfer_<images>.csv``/``.md`` per regime, ``transfer_front.png`` (test PSNR
    against probe accuracy) and ``transfer_curves.png`` into ``output``."""
    if train:
        for images in regimes:
            for config in configs:
                for seed in range(1, seeds + 1):
                    for sweep, command in sweep_commands(
                        images, config, base, strategies, seed, runs
                    ):
                        if not _sweep_finished(sweep):
                            print("$", " ".join(command[1:]), flush=True)
                            subprocess.run(command, check=True)
                        for job in sorted(p.parent for p in sweep.glob("*/metrics.json")):
                            if not (job / EVALUATION / "metrics.json").is_file():
                                command = evaluate_command(
                                    job, classifier_weights, probe_train_images
                                )
                                print("$", " ".join(command[1:]), flush=True)
                                subprocess.run(command, check=True)
    names = [config.name for config in configs]
    tables, regime_jobs = [], {}
    for images in regimes:
        jobs = read_regime(runs / "transfer" / str(images))
        if not jobs:
            raise SystemExit(f"no finished jobs under {runs / 'transfer' / str(images)}")
        any_job = next(iter(jobs.values()))[0]
        floats = _latent_floats(runs / "transfer" / str(images), any_job)
        references = reference_marks(
            [*configs[0].scratch_overrides(), *base], images, floats, probe_train_images
        )
        present = [name for name in names if any(key[0] == name for key in jobs)]
        table = regime_table(images, jobs, present, references)
        table.write(output, f"transfer_{images}")
        tables.append(table)
        regime_jobs[images] = (jobs, references)
    from autoencoder.benchmarks.plots import transfer_curves, transfer_front

    transfer_front(regime_jobs, output / "transfer_front.png")
    transfer_curves(
        {images: jobs for images, (jobs, _) in regime_jobs.items()},
        output / "transfer_curves.png",
    )
    return tables


def _latent_floats(regime: Path, job: Job) -> int:
    metrics = next(regime.glob(f"{job.config}/*/seed*/*/metrics.json"))
    return int(json.loads(metrics.read_text())["latent_floats"])
