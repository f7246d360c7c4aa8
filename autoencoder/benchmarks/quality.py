"""Reconstruction quality at a fixed number of latent floats, next to PCA.

Each named config is trained at every latent size by one multirun of ``scripts/train.py``
(a sweep over ``model.latent_channels``) into ``<output>/quality/<name>/``, then read back
from the job folders, so ``--from`` can summarise finished runs again. PCA with as many
components as the latent has floats, fitted on the same training split, is the linear
baseline: the best a linear autoencoder of that size can do.

``full=True`` is the full-data mode: each latent size is one run of ``scripts/train.py``
in ``<runs>/quality_full/<name>/<floats>/``, long enough that it may outlive a session: a
run with a ``last.ckpt`` but no ``metrics.json`` is resumed from it, and ``--from`` reads
runs as they stand (a stopped run's test figures come from evaluating its ``last.ckpt``).
The learning curves (validation PSNR per epoch, PCA's test PSNR across) go to a figure.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torchmetrics.functional.image import structural_similarity_index_measure

from autoencoder.benchmarks.tables import Table
from autoencoder.config import compose_config, instantiate

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
# henriwoodcock, "Applying Modern Best Practices to Autoencoders": a pretrained ResNet-34
# encoder on CIFAR-10, 1,000 latent floats, 15 epochs.
PUBLIC_REPORT = {"floats": 1000, "epochs": 15, "mse": 0.004345}


def psnr(mse: float) -> float:
    """PSNR in dB of [0, 1] pixels with mean squared error ``mse`` (infinite when exact)."""
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


@dataclass(frozen=True)
class Layout:
    """The latent grid of a config: floats per image = channels x height x width."""

    height: int
    width: int

    def channels(self, floats: int) -> int | None:
        """The channels that give ``floats`` floats per image, if a whole number does."""
        area = self.height * self.width
        return floats // area if floats % area == 0 and floats >= area else None


def latent_layout(overrides: Sequence[str]) -> Layout:
    """The latent's height and width for a config: image size over the encoder's reduction."""
    cfg = compose_config("train", *overrides)
    cfg.encoder.weights = None
    encoder = instantiate(cfg.encoder)
    datamodule = instantiate(cfg.data)
    _, height, width = datamodule.image_shape
    return Layout(height // encoder.reduction, width // encoder.reduction)


def sweep_command(
    name: str, overrides: Sequence[str], channels: Sequence[int], epochs: int, output: Path
) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "-m",
        *overrides,
        "logger=csv",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        f"model.latent_channels={','.join(map(str, channels))}",
        f"hydra.sweep.dir={output / 'quality' / name}",
    ]


@torch.no_grad()
def pca_baseline(
    train: torch.Tensor, test: torch.Tensor, components: Sequence[int], keep_basis: bool = False
) -> dict[int, dict[str, Any]]:
    """Test MSE, PSNR and SSIM of PCA with each number of ``components``, fitted on ``train``
    (images N x 3 x H x W in [0, 1]); one eigendecomposition serves every size. With
    ``keep_basis``, also the ``mean`` and the ``basis`` (pixels x components) that project
    images (flattened, in float64) to their coefficients."""
    flat = train.flatten(1).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    test_flat = test.flatten(1).double() - mean
    results = {}
    for k in components:
        basis = vectors[:, -k:]
        reconstruction = ((test_flat @ basis) @ basis.T + mean).float().view_as(test)
        reconstruction = reconstruction.clamp(0, 1)
        mse = float(torch.mean((reconstruction - test) ** 2))
        ssim = float(
            torch.stack(
                [
                    structural_similarity_index_measure(r, t, data_range=1.0) * len(t)
                    for r, t in zip(reconstruction.split(500), test.split(500), strict=True)
                ]
            ).sum()
            / len(test)
        )
        results[k] = {"mse": mse, "psnr": psnr(mse), "ssim": ssim}
        if keep_basis:
            results[k] |= {"mean": mean, "basis": basis}
    return results


def split_images(overrides: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split (without the validation images) and the test split of a config's
    data, as the autoencoder sees them (no augmentation)."""
    train, test, _, _ = labelled_splits(overrides)
    return train, test


def labelled_splits(
    overrides: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`split_images` and the labels of both splits (-1 where unlabelled)."""
    cfg = compose_config(
        "train", *overrides, "data.horizontal_flip=false", "data.random_crop=false"
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")

    def stack(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        items = [dataset[i] for i in range(len(dataset))]
        return torch.stack([image for image, _ in items]), torch.tensor([lab for _, lab in items])

    (train, train_labels), (test, test_labels) = map(
        stack, (datamodule.train_set, datamodule.test_set)
    )
    return train, test, train_labels, test_labels


@dataclass
class Result:
    config: str
    latent: str
    floats: int
    epochs: int
    mse: float
    psnr: float
    ssim: float
    fit_seconds: float
    val_psnr: list[float]


def val_curve(run: Path) -> list[float]:
    """Validation PSNR after each epoch of a run (the last value logged for an epoch, so a
    resumed run's log reads as one curve)."""
    with (run / "csv" / "metrics.csv").open(newline="") as file:
        per_epoch = {
            int(row["epoch"]): float(row["val/psnr"])
            for row in csv.DictReader(file)
            if row.get("val/psnr")
        }
    return [per_epoch[epoch] for epoch in sorted(per_epoch)]


def read_results(name: str, folder: Path) -> list[Result]:
    results = []
    for metrics_file in sorted(folder.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        config = OmegaConf.load(metrics_file.parent / ".hydra" / "config.yaml")
        curve = val_curve(metrics_file.parent)
        floats = int(metrics["latent_floats"])
        channels = config.model.latent_channels
        side = math.isqrt(floats // channels)
        results.append(
            Result(
                config=name,
                latent=f"{channels} x {side} x {side}",
                floats=floats,
                epochs=config.trainer.max_epochs,
                mse=metrics["test/mse"],
                psnr=metrics["test/psnr"],
                ssim=metrics["test/ssim"],
                fit_seconds=metrics.get("fit_seconds", math.nan),
                val_psnr=curve,
            )
        )
    return results


def epochs_to_reach(curve: Sequence[float], target: float) -> float | None:
    """When a validation curve reaches ``target`` dB: the epoch it did, or, extrapolated, the
    epoch a straight line through PSNR against log(epoch) over its second half reaches it
    (``None`` if that line does not rise)."""
    reached = next((e for e, value in enumerate(curve, 1) if value >= target), None)
    if reached is not None or len(curve) < 4:
        return reached
    epochs = range(len(curve) // 2 + 1, len(curve) + 1)
    xs, ys = [math.log(e) for e in epochs], list(curve[len(curve) // 2 :])
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    if slope <= 0:
        return None
    return math.exp(mean_x + (target - mean_y) / slope)


def extrapolation_cell(epochs: float | None, budget: int, horizon: int = 100) -> float | str | None:
    """An extrapolated epoch count, or ``> horizon x budget`` where a straight line that far
    out says nothing."""
    if epochs is not None and epochs > horizon * budget:
        return f"> {horizon * budget}"
    return epochs


def run(
    configs: dict[str, list[str]],
    floats: Sequence[int],
    epochs: int,
    runs: Path,
    output: Path,
    train: bool = True,
) -> Table:
    """Train (unless ``train`` is false) each config at each latent size under ``runs``, fit
    PCA, and write ``quality.csv`` and ``quality.md`` into ``output``."""
    first = next(iter(configs.values()))
    for name, overrides in configs.items():
        layout = latent_layout(overrides)
        channels = [c for c in map(layout.channels, floats) if c is not None]
        if train and channels:
            command = sweep_command(name, overrides, channels, epochs, runs)
            print("$", " ".join(command[1:]), flush=True)
            subprocess.run(command, check=True)
    results = [result for name in configs for result in read_results(name, runs / "quality" / name)]
    if not results:
        raise SystemExit(f"no finished runs under {runs / 'quality'}")
    train_images, test_images = split_images(first)
    pca = pca_baseline(train_images, test_images, sorted({r.floats for r in results}))
    table = Table(
        title=f"quality: test set, {len(train_images)} training images",
        columns=(
            "config",
            "latent",
            "floats",
            "epochs",
            "test MSE",
            "PSNR (dB)",
            "SSIM",
            "wall time (s)",
            "PCA MSE",
            "PCA PSNR (dB)",
            "PCA SSIM",
            "PSNR - PCA (dB)",
            "epochs to PCA",
        ),
        formats={
            "test MSE": 5,
            "PCA MSE": 5,
            "PSNR (dB)": 2,
            "PCA PSNR (dB)": 2,
            "PSNR - PCA (dB)": 2,
            "wall time (s)": 0,
            "epochs to PCA": 0,
        },
    )
    for result in sorted(results, key=lambda r: (r.floats, r.config)):
        baseline = pca[result.floats]
        table.add(
            **{
                "config": result.config,
                "latent": result.latent,
                "floats": result.floats,
                "epochs": result.epochs,
                "test MSE": result.mse,
                "PSNR (dB)": result.psnr,
                "SSIM": result.ssim,
                "wall time (s)": result.fit_seconds,
                "PCA MSE": baseline["mse"],
                "PCA PSNR (dB)": baseline["psnr"],
                "PCA SSIM": baseline["ssim"],
                "PSNR - PCA (dB)": result.psnr - baseline["psnr"],
                "epochs to PCA": extrapolation_cell(
                    epochs_to_reach(result.val_psnr, baseline["psnr"]), result.epochs
                ),
            }
        )
    table.add(
        **{
            "config": "public report (ResNet-34)",
            "floats": PUBLIC_REPORT["floats"],
            "epochs": PUBLIC_REPORT["epochs"],
            "test MSE": PUBLIC_REPORT["mse"],
            "PSNR (dB)": psnr(PUBLIC_REPORT["mse"]),
        }
    )
    table.notes = [
        "PCA: fitted on the same training split, as many components as latent floats.",
        "epochs to PCA: the epoch whose validation PSNR reached PCA's test PSNR, or beyond "
        "the budget, where a line through validation PSNR against log(epoch) over the "
        "second half of the run would reach it ('> N': beyond 100 times the budget).",
    ]
    table.write(output, "quality")
    return table


# ----------------------------------------------------------------------- full-data mode
@dataclass
class FullRun:
    """A full-data run as it stands: finished, or stopped after ``epochs`` epochs."""

    config: str
    latent: str
    floats: int
    train_images: int
    batch_size: int
    epochs: int
    steps: int
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


def full_run_command(overrides: Sequence[str], channels: int, epochs: int, folder: Path):
    """``scripts/train.py`` for one latent size, resumed from ``last.ckpt`` when there is one."""
    last = folder / "checkpoints" / "last.ckpt"
    return [
        sys.executable,
        str(SCRIPT),
        *overrides,
        "logger=csv",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        f"model.latent_channels={channels}",
        f"hydra.run.dir={folder}",
        *([f"ckpt_path={last}"] if last.is_file() else []),
    ]


def _evaluate_last(folder: Path) -> dict[str, Any]:
    """Test metrics of a stopped run's ``last.ckpt`` (evaluated again when it is newer)."""
    last, out = folder / "checkpoints" / "last.ckpt", folder / "evaluation"
    metrics_file = out / "metrics.json"
    if not metrics_file.is_file() or metrics_file.stat().st_mtime < last.stat().st_mtime:
        evaluate = SCRIPT.with_name("evaluate.py")
        command = [
            sys.executable,
            str(evaluate),
            f"ckpt_path={last}",
            "probe=false",
            f"hydra.run.dir={out}",
        ]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
    return json.loads(metrics_file.read_text())


def _progress(checkpoint: Path) -> tuple[float, int]:
    """The fit's wall time so far (the ``Timer`` state a checkpoint keeps) and its steps."""
    from autoencoder.checkpointing import read_checkpoint

    state = read_checkpoint(checkpoint)
    states = state.get("callbacks", {})
    timer = next((v for k, v in states.items() if k.startswith("Timer")), {})
    return float(timer.get("time_elapsed", {}).get("train", math.nan)), int(state["global_step"])


def finished_metrics(folder: Path) -> dict[str, Any]:
    """The ``metrics.json`` of the run's last finished fit; empty when none."""
    metrics = folder / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def trained_epochs(folder: Path) -> int:
    """The epochs of the run's last finished fit; 0 when none."""
    return int(finished_metrics(folder).get("epochs", 0))


def _epochs_trained(checkpoint: str) -> int:
    """Epochs behind a checkpoint (0 when the file is gone)."""
    from autoencoder.checkpointing import read_checkpoint

    return int(read_checkpoint(checkpoint)["epoch"]) + 1 if Path(checkpoint).is_file() else 0


def _shown(path: str) -> str:
    """``path`` relative to the working folder when it lies under it."""
    resolved, here = Path(path).resolve(), Path.cwd().resolve()
    return str(resolved.relative_to(here)) if resolved.is_relative_to(here) else path


def read_full_run(name: str, folder: Path, train_images: int) -> FullRun | None:
    """A full-data run folder as it stands; ``None`` before its first epoch ended."""
    if not (folder / "checkpoints" / "last.ckpt").is_file():
        return None
    config = OmegaConf.load(folder / ".hydra" / "config.yaml")
    curve = val_curve(folder)
    metrics = finished_metrics(folder)
    # finished: metrics.json of the run's whole curve (not of a shorter run extended since)
    finished = bool(metrics) and metrics.get("epochs", 0) >= len(curve)
    seconds, steps = _progress(folder / "checkpoints" / "last.ckpt")
    if finished:
        seconds, machine = metrics.get("fit_seconds", math.nan), metrics.get("machine", "")
    else:
        metrics = _evaluate_last(folder)
        machine = ""
    floats = int(folder.name)  # <runs>/quality_full/<name>/<floats>
    channels = config.model.latent_channels
    started_from = config.get("init_from")
    side = math.isqrt(floats // channels)
    return FullRun(
        config=name,
        latent=f"{channels} x {side} x {side}",
        floats=floats,
        train_images=train_images,
        batch_size=int(config.data.batch_size),
        epochs=len(curve),
        steps=steps,
        finished=finished,
        mse=metrics["test/mse"],
        psnr=metrics["test/psnr"],
        ssim=metrics["test/ssim"],
        fit_seconds=seconds,
        machine=machine,
        val_psnr=curve,
        started_from=started_from,
        epochs_before=_epochs_trained(started_from) if started_from else 0,
    )


def run_full(
    configs: dict[str, list[str]],
    floats: Sequence[int],
    epochs: int,
    runs: Path,
    output: Path,
    train: bool = True,
) -> Table:
    """The full-data mode: train (unless ``train`` is false) or resume each config at each
    latent size, then write ``quality_full.csv``/``.md`` and ``quality_full_curves.png``."""
    first = next(iter(configs.values()))
    for name, overrides in configs.items():
        layout = latent_layout(overrides)
        for size in floats:
            channels = layout.channels(size)
            folder = runs / "quality_full" / name / str(size)
            # a run that stopped, or finished fewer epochs, resumes from its last.ckpt
            if train and channels is not None and trained_epochs(folder) < epochs:
                command = full_run_command(overrides, channels, epochs, folder)
                print("$", " ".join(command[1:]), flush=True)
                subprocess.run(command, check=True)
    train_images, test_images = split_images(first)
    found = [
        read_full_run(name, runs / "quality_full" / name / str(size), len(train_images))
        for name in configs
        for size in floats
    ]
    results = [result for result in found if result is not None]
    if not results:
        raise SystemExit(f"no runs under {runs / 'quality_full'}")
    pca = pca_baseline(train_images, test_images, sorted({r.floats for r in results}))
    table = Table(
        title=f"quality, full data: test set, {len(train_images)} training images",
        columns=(
            "config",
            "latent",
            "floats",
            "train images",
            "batch",
            "epochs",
            "steps",
            "status",
            "test MSE",
            "PSNR (dB)",
            "SSIM",
            "wall time (h)",
            "machine",
            "PCA PSNR (dB)",
            "PSNR - PCA (dB)",
        ),
        formats={
            "test MSE": 5,
            "PSNR (dB)": 2,
            "PCA PSNR (dB)": 2,
            "PSNR - PCA (dB)": 2,
            "wall time (h)": 2,
        },
    )
    for result in sorted(results, key=lambda r: (r.floats, r.config)):
        table.add(
            **{
                "config": result.config,
                "latent": result.latent,
                "floats": result.floats,
                "train images": result.train_images,
                "batch": result.batch_size,
                "epochs": result.epochs,
                "steps": result.steps,
                "status": "finished" if result.finished else "stopped (last.ckpt)",
                "test MSE": result.mse,
                "PSNR (dB)": result.psnr,
                "SSIM": result.ssim,
                "wall time (h)": result.fit_seconds / 3600,
                "machine": result.machine or "-",
                "PCA PSNR (dB)": pca[result.floats]["psnr"],
                "PSNR - PCA (dB)": result.psnr - pca[result.floats]["psnr"],
            }
        )
    table.notes = [
        "PCA: fitted on the same training split, as many components as latent floats.",
        "stopped: the run's last.ckpt, evaluated on the test set (scripts/evaluate.py); the "
        "run resumes from it with the same command.",
        *(
            f"{r.config}, {r.floats} floats: started from the weights of {_shown(r.started_from)} "
            f"({r.epochs_before} epochs; init_from); its epochs, steps and wall time count "
            "its own training only, and its curve starts after those epochs."
            for r in results
            if r.started_from
        ),
    ]
    table.write(output, "quality_full")
    from autoencoder.benchmarks.plots import quality_curves

    curves: dict[int, dict[str, list[float]]] = {}
    first_epochs: dict[str, int] = {}
    for result in results:
        label = f"{result.config} ({result.latent})"
        curves.setdefault(result.floats, {})[label] = result.val_psnr
        first_epochs[label] = result.epochs_before + 1
    quality_curves(
        curves,
        {size: pca[size]["psnr"] for size in curves},
        output / "quality_full_curves.png",
        first_epochs,
    )
    return table
