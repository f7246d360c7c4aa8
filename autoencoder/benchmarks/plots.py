"""The benchmark's figures: the transfer study's learning curves from each run's start, the
quality learning curves against PCA, and the speed bars.

matplotlib comes with the ``dev`` extra; :mod:`autoencoder.plotting` imports it when a
figure is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoencoder.plotting import pyplot, save_figure


def _band(
    ax: Any,
    runs: Sequence[Sequence[float]],
    colour: str | None,
    label: str,
    first_epoch: int = 1,
) -> None:
    """The mean of several curves, with a band from the lowest to the highest."""
    length = min(len(run) for run in runs)
    epochs = list(range(first_epoch, first_epoch + length))
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
    references: Mapping[str, Mapping[int, float]] | None = None,
) -> Path:
    """Validation PSNR per epoch of each run, one panel per latent size, with PCA's test
    PSNR at that size as a dashed horizontal line and each of ``references`` (label: test
    PSNR by latent floats) as a dotted one where it has a value for that size.
    ``first_epochs`` gives the epoch a curve starts at (1 by default; later for a run
    started from another run's weights)."""
    plt = pyplot()
    sizes = sorted(curves)
    figure, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.8), squeeze=False)
    for ax, floats in zip(axes[0], sizes, strict=True):
        for label, curve in curves[floats].items():
            first = (first_epochs or {}).get(label, 1)
            epochs = range(first, first + len(curve))
            ax.plot(epochs, curve, marker="o", markersize=2.5, label=label)
        if floats in pca:
            ax.axhline(pca[floats], color="black", linestyle="--", lw=1, label="PCA (test)")
        for label, values in (references or {}).items():
            if floats in values:
                ax.axhline(values[floats], color="0.35", linestyle=":", lw=1.2, label=label)
        ax.set_title(f"{floats} latent floats")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(figure, path)


def speed_bars(speed: Mapping[str, Any], path: Path) -> Path:
    """Images per second of each variant of the speed part (``speed.json``), as bars."""
    plt = pyplot()
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
    return save_figure(figure, path)


START_COLOURS = {
    "scratch": "tab:gray",
    "classifier_frozen": "tab:brown",
    "classifier_two_phase": "tab:olive",
    "classifier_full": "tab:green",
    "source_frozen": "tab:purple",
    "source_full": "tab:blue",
    "source_two_phase": "tab:red",
    "source_adapt": "black",
    "encoder_two_phase": "tab:orange",
    "encoder_full": "tab:cyan",
    "encoder_frozen": "tab:pink",
}


def transfer_start_curves(regimes: Mapping[int, Any], path: Path) -> Path:
    """The transfer study (third edition): validation PSNR from the start (epoch 0, scored
    before the first step) through every epoch, one panel per regime, one line per strategy
    (mean over seeds, band from the lowest to the highest seed), the source as it is as a
    dashed line."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4.6), squeeze=False)
    for ax, (images, regime) in zip(axes[0], sorted(regimes.items()), strict=True):
        for strategy, colour in START_COLOURS.items():
            runs = [
                [job.start, *job.val_psnr]
                for job in regime.runs(strategy)
                if job.start is not None and job.val_psnr
            ]
            if runs:
                _band(ax, runs, colour, f"{strategy} ({len(runs)})", first_epoch=0)
        source = regime.runs("source")
        if source:
            ax.axhline(source[0].test_psnr, color="black", linestyle="--", linewidth=1)
            ax.annotate("source as it is (test)", (0, source[0].test_psnr), fontsize=7)
        ax.set_title(f"{images} target images, {regime.epochs} epochs", fontsize=9)
        ax.set_xlabel("epoch (0: before the first step)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("validation PSNR (dB)")
    return save_figure(figure, path, dpi=110)


def transfer_frontier(regime: Any, path: Path) -> Path | None:
    """Fidelity against semantics: each strategy's test PSNR against its latent probe
    accuracy, the mean over seeds with error bars from the lowest to the highest seed, one
    point per strategy; ``None`` (no figure) when no run has a probe."""
    points = []
    for strategy in regime.strategies:
        runs = [job for job in regime.runs(strategy) if job.probe_acc is not None]
        if runs:
            probe = [100 * job.probe_acc for job in runs]
            psnr = [job.test_psnr for job in runs]
            points.append((strategy, probe, psnr))
    if not points:
        return None
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6.4, 4.8))
    for strategy, probe, psnr in points:
        x, y = sum(probe) / len(probe), sum(psnr) / len(psnr)
        colour = START_COLOURS.get(strategy, "tab:gray")
        ax.errorbar(
            x,
            y,
            xerr=[[x - min(probe)], [max(probe) - x]],
            yerr=[[y - min(psnr)], [max(psnr) - y]],
            fmt="o",
            color=colour,
            capsize=3,
            label=f"{strategy} ({len(psnr)})",
        )
        ax.annotate(strategy, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("linear probe accuracy on the latents (%)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(
        f"fidelity against semantics, {regime.images} target images, {regime.epochs} epochs",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return save_figure(figure, path, dpi=110)


def splits_ranking(
    changes: Mapping[str, Mapping[str, Sequence[float]]], images: int, path: Path
) -> Path | None:
    """The ranking across splits: per strategy (best mean first) the change of test PSNR over
    the source as it is (``changes``: strategy -> split -> each seed's), one dot per split and
    seed, a bar at the mean."""
    rows = []
    for strategy, by_split in changes.items():
        values = [v for split in by_split.values() for v in split]
        if values:
            rows.append((sum(values) / len(values), strategy, by_split))
    if not rows:
        return None
    rows.sort(key=lambda row: row[0])
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    markers = "osD^v<>"
    for index, (mean, _, by_split) in enumerate(rows):
        ax.barh(index, mean, color="tab:blue", alpha=0.3)
        for number, (split, values) in enumerate(sorted(by_split.items())):
            ax.scatter(
                values,
                [index] * len(values),
                marker=markers[number % len(markers)],
                color="black",
                s=14,
                label=f"split {split}" if index == len(rows) - 1 else None,
            )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [row[1] for row in rows], fontsize=8)
    ax.set_xlabel("test PSNR - the source's as it is (dB)")
    ax.set_title(f"adaptation across splits, {images} target images", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7)
    return save_figure(figure, path, dpi=110)
