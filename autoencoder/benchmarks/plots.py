"""The benchmark's figures: the transfer study's front (test PSNR against probe accuracy) and
learning curves, the quality learning curves against PCA, and the speed bars.

matplotlib comes with the ``dev`` extra; only these functions import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLOURS = {
    "scratch": "tab:gray",
    "full": "tab:blue",
    "two_phase": "tab:red",
    "epoch": "tab:green",
    "frozen": "tab:purple",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = "osD^vP*X"


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def transfer_front(regimes: Mapping[int, tuple[Mapping, Any]], path: Path) -> Path:
    """Test PSNR against the latent's probe accuracy, one panel per regime, one point per
    configuration (marker) and strategy (colour) with error bars of one standard deviation
    over seeds; PCA at the same size (star) and the raw pixels' probe (dashed line) as
    reference marks."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(regimes), figsize=(6.5 * len(regimes), 5), squeeze=False)
    for ax, (images, (jobs, references)) in zip(axes[0], sorted(regimes.items()), strict=True):
        configs = sorted({config for config, _ in jobs})
        for (config, strategy), runs in sorted(jobs.items()):
            probes = [100 * job.probe_acc for job in runs if job.probe_acc is not None]
            if not probes:
                continue
            x, x_sd = _mean_sd(probes)
            y, y_sd = _mean_sd([job.test_psnr for job in runs])
            ax.errorbar(
                x,
                y,
                xerr=x_sd,
                yerr=y_sd,
                marker=MARKERS[configs.index(config) % len(MARKERS)],
                color=COLOURS.get(strategy),
                markersize=7,
                capsize=2,
                linestyle="none",
            )
        if references is not None:
            ax.plot(
                100 * references.pca_probe_acc,
                references.pca_psnr,
                "*",
                color="black",
                markersize=13,
            )
            ax.annotate(
                f"PCA-{references.floats}",
                (100 * references.pca_probe_acc, references.pca_psnr),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=8,
            )
            ax.axvline(100 * references.pixel_probe_acc, color="black", linestyle="--", lw=1)
            ax.annotate(
                "probe on raw pixels",
                (100 * references.pixel_probe_acc, ax.get_ylim()[0]),
                textcoords="offset points",
                xytext=(3, 6),
                fontsize=8,
                rotation=90,
            )
        handles = [
            plt.Line2D([], [], color=colour, marker="o", linestyle="none", label=strategy)
            for strategy, colour in COLOURS.items()
            if any(s == strategy for _, s in jobs)
        ] + [
            plt.Line2D(
                [],
                [],
                color="gray",
                marker=MARKERS[i % len(MARKERS)],
                linestyle="none",
                label=config,
            )
            for i, config in enumerate(configs)
        ]
        ax.legend(handles=handles, fontsize=7, loc="best")
        ax.set_title(f"{images} target training images")
        ax.set_xlabel("linear probe accuracy on the latent (%)")
        ax.set_ylabel("test PSNR (dB)")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def transfer_curves(regimes: Mapping[int, Mapping[tuple[str, str], Sequence[Any]]], path: Path):
    """Validation PSNR per epoch: one row of panels per regime, one panel per configuration,
    one line per strategy (mean over seeds, band from the lowest to the highest seed)."""
    plt = _pyplot()
    configs = sorted({config for jobs in regimes.values() for config, _ in jobs})
    figure, axes = plt.subplots(
        len(regimes),
        len(configs),
        figsize=(4.2 * len(configs), 3.4 * len(regimes)),
        squeeze=False,
        sharey="row",
    )
    for row, (images, jobs) in zip(axes, sorted(regimes.items()), strict=True):
        for ax, config in zip(row, configs, strict=True):
            for strategy in COLOURS:
                runs = [job.val_psnr for job in jobs.get((config, strategy), [])]
                if runs:
                    _band(ax, runs, COLOURS[strategy], f"{strategy} ({len(runs)})")
            ax.set_title(f"{config}, {images} images", fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        row[0].set_ylabel("validation PSNR (dB)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _band(ax: Any, runs: Sequence[Sequence[float]], colour: str | None, label: str) -> None:
    """The mean of several curves, with a band from the lowest to the highest."""
    length = min(len(run) for run in runs)
    epochs = list(range(1, length + 1))
    columns = list(zip(*(run[:length] for run in runs), strict=True))
    ax.plot(
        epochs,
        [sum(c) / len(c) for c in columns],
        marker="o",
        markersize=3,
        color=colour,
        label=label,
    )
    if len(runs) > 1:
        low, high = [min(c) for c in columns], [max(c) for c in columns]
        ax.fill_between(epochs, low, high, color=colour, alpha=0.2, linewidth=0)


def quality_curves(
    curves: Mapping[int, Mapping[str, Sequence[float]]],
    pca: Mapping[int, float],
    path: Path,
    first_epochs: Mapping[str, int] | None = None,
) -> Path:
    """Validation PSNR per epoch of each run, one panel per latent size, with PCA's test
    PSNR at that size as a horizontal line. ``first_epochs`` gives the epoch a curve starts
    at (1 by default; later for a run started from another run's weights)."""
    plt = _pyplot()
    sizes = sorted(curves)
    figure, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.8), squeeze=False)
    for ax, floats in zip(axes[0], sizes, strict=True):
        for label, curve in curves[floats].items():
            first = (first_epochs or {}).get(label, 1)
            epochs = range(first, first + len(curve))
            ax.plot(epochs, curve, marker="o", markersize=2.5, label=label)
        if floats in pca:
            ax.axhline(pca[floats], color="black", linestyle="--", lw=1, label="PCA (test)")
        ax.set_title(f"{floats} latent floats")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def speed_bars(speed: Mapping[str, Any], path: Path) -> Path:
    """Images per second of each variant of the speed part (``speed.json``), as bars."""
    plt = _pyplot()
    variants = speed["variants"]
    names = list(variants)
    rates = [variants[name]["images_per_second"] for name in names]
    figure, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.4))
    bars = ax.barh(
        names, rates, color=["tab:red" if n == "pipeline" else "tab:blue" for n in names]
    )
    ax.bar_label(bars, labels=[f"{rate:.0f}" for rate in rates], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("training images per second")
    ratio = speed["ratios"].get("pipeline / bare loop throughput")
    subtitle = f"; pipeline / bare loop {ratio:.2f}" if ratio else ""
    ax.set_title(f"{speed['machine']}{subtitle}", fontsize=9)
    ax.set_xlim(0, max(rates) * 1.15)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
