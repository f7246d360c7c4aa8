"""The pipeline against the bare loop, alternated: robust to a machine whose speed drifts.

On a shared or throttled machine one measurement of each side, minutes apart, can differ
by more than the effect measured (2-3 ms a step on these CPUs). Here the bare loop and the
pipeline run in turns, ``rounds`` times each, in one process, for each data path
(batches drawn per image, and drawn on the device); every round gives one ratio (bare
seconds per step over the pipeline's: 1.0 means no cost) and one fixed cost (their
difference). The table reports the median of the rounds and their spread (lowest and
highest), so that a goal such as "at least 0.95" or "at most 2 ms" is settled by whether
the spread stays on one side of it.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoencoder.benchmarks.step_timing import (
    bare_loop,
    compose_benchmark_config,
    in_memory_batches,
    pipeline,
)
from autoencoder.benchmarks.tables import Table
from autoencoder.inputs import pick_device
from autoencoder.loggers import machine_description

DATA_PATHS = {
    "per-image loader": "data.on_device=false",
    "drawn on the device": "data.on_device=true",
}


@dataclass(frozen=True)
class Rounds:
    """The rounds of one data path: seconds per step of each side, round by round."""

    bare: list[float]
    pipeline: list[float]

    @property
    def ratios(self) -> list[float]:
        return [b / p for b, p in zip(self.bare, self.pipeline, strict=True)]

    @property
    def costs_ms(self) -> list[float]:
        return [1000 * (p - b) for b, p in zip(self.bare, self.pipeline, strict=True)]


def alternate(
    overrides: list[str],
    output: Path,
    rounds: int = 5,
    steps: int = 30,
    warmup: int = 5,
    device_name: str | None = None,
    name: str = "ratio",
) -> Table:
    """Alternate the bare loop and the pipeline ``rounds`` times for each data path; write
    ``<name>.csv``/``.md`` with the median ratio and fixed cost and their spread."""
    device = pick_device("--device", device_name)
    base = [*(["trainer=gpu"] if device.type == "cuda" else []), *overrides]
    measured: dict[str, Rounds] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for path, setting in DATA_PATHS.items():
            cfg = compose_benchmark_config([*base, setting], Path(scratch) / "run")
            bf16 = str(cfg.trainer.precision).startswith("bf16")
            batches = in_memory_batches(cfg, warmup + steps)
            pipeline(copy.deepcopy(cfg), warmup, warmup)  # one-time costs of a first fit
            sides = Rounds([], [])
            for _ in range(rounds):
                bare = bare_loop(copy.deepcopy(cfg), batches, warmup, device, bf16=bf16)
                sides.bare.append(statistics.median(bare))
                sides.pipeline.append(
                    statistics.median(pipeline(copy.deepcopy(cfg), steps, warmup))
                )
            measured[path] = sides
    table = ratio_table(measured, len(batches[0]), rounds, steps, warmup)
    table.title += f", {machine_description(device)}"
    table.notes = [
        "ratio: the bare loop's seconds per step over the pipeline's (1.00: the pipeline costs "
        "nothing); fixed cost: the pipeline's step minus the bare loop's. Each round runs the "
        "bare loop, then the pipeline; median and spread (lowest .. highest) over the rounds.",
        f"overrides: {' '.join(base)}",
    ]
    table.write(output, name)
    return table


def ratio_table(
    measured: dict[str, Rounds], batch_size: int, rounds: int, steps: int, warmup: int
) -> Table:
    table = Table(
        title=(
            f"pipeline against the bare loop, alternated: {rounds} rounds of {steps} steps "
            f"(after {warmup}), batch {batch_size}"
        ),
        columns=[
            "data path",
            "bare loop (ms/step)",
            "pipeline (ms/step)",
            "ratio",
            "ratio spread",
            "fixed cost (ms)",
            "cost spread (ms)",
        ],
    )
    for path, sides in measured.items():
        ratios, costs = sides.ratios, sides.costs_ms
        table.add(
            **{
                "data path": path,
                "bare loop (ms/step)": f"{1000 * statistics.median(sides.bare):.1f}",
                "pipeline (ms/step)": f"{1000 * statistics.median(sides.pipeline):.1f}",
                "ratio": f"{statistics.median(ratios):.3f}",
                "ratio spread": f"{min(ratios):.3f} .. {max(ratios):.3f}",
                "fixed cost (ms)": f"{statistics.median(costs):.1f}",
                "cost spread (ms)": f"{min(costs):.1f} .. {max(costs):.1f}",
            }
        )
    return table
