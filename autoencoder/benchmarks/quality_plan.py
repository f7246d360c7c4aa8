"""The quality benchmark's plan and launch: every named config at every latent size is
one run folder, ``<runs>/<mode>/<config>/<floats>/``, trained by one
``python -m autoencoder.train`` run, resumed from its ``last.ckpt`` while it has not
finished the asked epochs.

The benchmark sets ``model.latent_channels`` from the config's latent grid (a size that is
no whole number of channels is left out), unless the config's overrides hold the
placeholder ``{floats}`` (``experiment=quality_{floats}``): they are then formatted per size
and set the size themselves, which the plan checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from autoencoder.benchmarks.baselines import PUBLIC_REPORT
from autoencoder.cli import job_command
from autoencoder.config import compose_config, instantiate
from autoencoder.errors import ConfigError
from autoencoder.run_folder import RunFolder

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


@dataclass(frozen=True)
class LatentGrid:
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

    grid: LatentGrid
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
            LatentGrid(height // encoder.reduction, width // encoder.reduction),
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
    configs: Mapping[str, Sequence[str]], floats: Sequence[int], folder: Path
) -> list[PlannedRun]:
    """Every config at every latent size it can have, as a :class:`PlannedRun` under
    ``folder`` (``<runs>/<mode>/``); a config whose overrides hold :data:`PLACEHOLDER` must
    compose each size itself (a :class:`ConfigError` saying so when it does not), and every
    size in ``floats`` must be reached by at least one config (or be the public report's,
    whose row the table holds)."""
    planned = []
    grids: dict[str, LatentGrid] = {}
    for name, overrides in configs.items():
        templated = any(PLACEHOLDER in override for override in overrides)
        composed = None if templated else Composed.of(overrides)
        if composed is not None:
            grids[name] = composed.grid
        for size in floats:
            if templated:
                sized = tuple(o.replace(PLACEHOLDER, str(size)) for o in overrides)
                composed = Composed.of(sized)
                _check_size(name, sized, composed, size)
            else:
                channels = composed.grid.channels(size)
                if channels is None:
                    continue
                sized = (*overrides, f"model.latent_channels={channels}")
            run_folder = RunFolder(folder / name / str(size))
            planned.append(PlannedRun(name, size, sized, composed, run_folder, templated))
    # the public report's size has its row without a run of ours
    unreached = sorted(set(floats) - {run.floats for run in planned} - {PUBLIC_REPORT["floats"]})
    if unreached:
        raise ConfigError(_unreached_message(unreached, grids))
    return planned


def _unreached_message(sizes: Sequence[int], grids: Mapping[str, LatentGrid]) -> str:
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
    grid, channels = composed.grid, composed.latent_channels
    found = channels * grid.height * grid.width
    if found != size:
        fit = grid.channels(size)
        shown = f"{grid.height} x {grid.width}"
        fix = (
            f"model.latent_channels={fit} (its latent grid is {shown})"
            if fit is not None
            else f"a latent grid that {size} floats fill ({shown} does not)"
        )
        raise ConfigError(
            f"--config {name}: {' '.join(overrides)} gives {channels} x {grid.height} x "
            f"{grid.width} = {found} latent floats, not {size}. With {PLACEHOLDER} in its "
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
