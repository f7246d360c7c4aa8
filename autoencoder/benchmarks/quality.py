"""Reconstruction quality at a fixed number of latent floats, next to PCA.

Each named config is trained at every latent size by one multirun of ``scripts/train.py``
(a sweep over ``model.latent_channels``) into ``<output>/quality/<name>/``, then read back
from the job folders, so ``--from`` can summarise finished runs again. PCA with as many
components as the latent has floats, fitted on the same training split, is the linear
baseline: the best a linear autoencoder of that size can do.
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
    train: torch.Tensor, test: torch.Tensor, components: Sequence[int]
) -> dict[int, dict[str, float]]:
    """Test MSE, PSNR and SSIM of PCA with each number of ``components``, fitted on ``train``
    (images N x 3 x H x W in [0, 1]); one eigendecomposition serves every size."""
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
    return results


def split_images(overrides: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split (without the validation images) and the test split of a config's
    data, as the autoencoder sees them (no augmentation)."""
    cfg = compose_config(
        "train", *overrides, "data.horizontal_flip=false", "data.random_crop=false"
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")

    def stack(dataset: torch.utils.data.Dataset) -> torch.Tensor:
        return torch.stack([dataset[i][0] for i in range(len(dataset))])

    return stack(datamodule.train_set), stack(datamodule.test_set)


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


def read_results(name: str, folder: Path) -> list[Result]:
    results = []
    for metrics_file in sorted(folder.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        config = OmegaConf.load(metrics_file.parent / ".hydra" / "config.yaml")
        with (metrics_file.parent / "csv" / "metrics.csv").open(newline="") as file:
            curve = [float(row["val/psnr"]) for row in csv.DictReader(file) if row.get("val/psnr")]
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
    output: Path,
    train: bool = True,
) -> Table:
    """Train (unless ``train`` is false) each config at each latent size, fit PCA, and write
    ``quality.csv`` and ``quality.md``."""
    first = next(iter(configs.values()))
    for name, overrides in configs.items():
        layout = latent_layout(overrides)
        channels = [c for c in map(layout.channels, floats) if c is not None]
        if train and channels:
            command = sweep_command(name, overrides, channels, epochs, output)
            print("$", " ".join(command[1:]), flush=True)
            subprocess.run(command, check=True)
    results = [
        result for name in configs for result in read_results(name, output / "quality" / name)
    ]
    if not results:
        raise SystemExit(f"no finished runs under {output / 'quality'}")
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
