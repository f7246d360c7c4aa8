"""The benchmark's figures: learning curves of the transfer study and the speed bars.

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


def learning_curves(
    curves: Mapping[int, Mapping[str, Sequence[Sequence[float]]]], path: Path
) -> Path:
    """Validation PSNR per epoch, one panel per regime (training images), one line per
    strategy: the mean over seeds, with a band from the lowest to the highest seed."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2), squeeze=False)
    for ax, (images, strategies) in zip(axes[0], sorted(curves.items()), strict=True):
        for strategy, runs in strategies.items():
            length = min(len(run) for run in runs)
            epochs = list(range(1, length + 1))
            columns = list(zip(*(run[:length] for run in runs), strict=True))
            mean = [sum(column) / len(column) for column in columns]
            colour = COLOURS.get(strategy)
            label = f"{strategy} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            ax.plot(epochs, mean, marker="o", markersize=3, color=colour, label=label)
            if len(runs) > 1:
                low, high = [min(c) for c in columns], [max(c) for c in columns]
                ax.fill_between(epochs, low, high, color=colour, alpha=0.2, linewidth=0)
        ax.set_title(f"{images} training images")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
