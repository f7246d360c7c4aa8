"""matplotlib for the figures (the README's and the benchmark's): imported on first use only,
since it comes with the ``dev`` extra, drawing without a display, and one way to save."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    figure: Any, path: Path, dpi: int = 120, rect: tuple[float, float, float, float] | None = None
) -> Path:
    """Lay ``figure`` out tightly (within ``rect``, in figure coordinates, when given), write
    it to ``path`` (its folder made when missing) and close it."""
    figure.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path
