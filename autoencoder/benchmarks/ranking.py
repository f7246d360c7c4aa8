"""Rank candidate settings against a baseline, each trained with several seeds.

Every candidate is one ``scripts/train.py -m ... seed=1,2`` sweep whose ``summary.csv`` (one
row per job, :mod:`autoencoder.sweeps`) holds the metric. A candidate is *adopted* only when
its mean gain over the baseline exceeds the spread of both (the range, highest minus lowest
seed): with two seeds a standard deviation says little, a range says what was seen.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from autoencoder.benchmarks.tables import Table


@dataclass(frozen=True)
class Candidate:
    name: str
    overrides: str
    values: tuple[float, ...]  # the metric of each finished seed, in seed order

    @property
    def mean(self) -> float:
        return statistics.mean(self.values)

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values)


def read_sweep(name: str, folder: Path, metric: str, varied: str = "") -> Candidate | None:
    """The finished jobs of one sweep (``folder/summary.csv``); ``None`` before any finished."""
    summary = folder / "summary.csv"
    if not summary.is_file():
        return None
    with summary.open(newline="") as file:
        rows = [r for r in csv.DictReader(file) if r.get("status") == "COMPLETED" and r.get(metric)]
    if not rows:
        return None
    rows.sort(key=lambda row: int(row.get("seed") or 0))
    return Candidate(name, varied, tuple(float(row[metric]) for row in rows))


def ranking_table(
    baseline: Candidate, candidates: list[Candidate], metric: str, title: str, digits: int = 2
) -> Table:
    """One row per candidate: its seeds, mean, spread, gain over the baseline and verdict."""
    table = Table(
        title=title,
        columns=("candidate", "overrides", "seeds", metric, "mean", "spread", "gain", "adopt"),
        formats={"mean": digits, "spread": digits, "gain": digits},
    )
    for candidate in [baseline, *sorted(candidates, key=lambda c: -c.mean)]:
        is_baseline = candidate is baseline
        gain = candidate.mean - baseline.mean
        wins = gain > max(candidate.spread, baseline.spread)
        table.add(
            candidate=candidate.name,
            overrides=candidate.overrides or "(baseline)",
            seeds=len(candidate.values),
            **{metric: ", ".join(f"{v:.{digits}f}" for v in candidate.values)},
            mean=candidate.mean,
            spread=candidate.spread,
            gain=None if is_baseline else gain,
            adopt=None if is_baseline else ("yes" if wins else "no"),
        )
    table.notes.append(
        "spread: highest minus lowest seed; adopt: the mean gain over the baseline exceeds "
        "the spread of both."
    )
    return table


def run(
    sweeps: dict[str, tuple[Path, str]],
    baseline: str,
    metric: str,
    output: Path,
    name: str,
    digits: int = 2,
) -> Table:
    """Read each named sweep (folder, and the overrides it varies), rank them against
    ``baseline``, and write ``<name>.csv`` and ``<name>.md`` (values to ``digits``)."""
    found = {
        key: read_sweep(key, folder, metric, varied) for key, (folder, varied) in sweeps.items()
    }
    if found.get(baseline) is None:
        raise SystemExit(f"the baseline sweep {baseline!r} has no finished job")
    candidates = [c for key, c in found.items() if c is not None and key != baseline]
    missing = [key for key, c in found.items() if c is None]
    table = ranking_table(found[baseline], candidates, metric, f"ranking by {metric}", digits)
    if missing:
        table.notes.append(f"not finished yet: {', '.join(missing)}")
    table.write(output, name)
    return table
