"""The speed part (``scripts/benchmark.py speed``): every variant, the loaders, and the
overhead of each part of the pipeline, on generated data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.benchmarks.conftest import SMALL_MODEL, benchmark


def test_the_speed_part_measures_every_variant_and_writes_its_figures(
    arrays: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = benchmark(
        out,
        "speed",
        arrays,
        "--steps",
        "2",
        "--warmup",
        "1",
        "--skip",
        "bare-compile",
        *SMALL_MODEL,
        "finetune=full",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "speed.json").read_text())
    assert set(figures["variants"]) == {
        "pipeline",
        "bare",
        "bare-frozen",
        "bare-contiguous",
        "bare-bf16",
        "pipeline-bf16",
    }
    for variant in figures["variants"].values():
        assert variant["seconds"] > 0
        assert variant["images_per_second"] == pytest.approx(16 / variant["seconds"])
    bare, pipeline = figures["variants"]["bare"], figures["variants"]["pipeline"]
    ratio = figures["ratios"]["pipeline / bare loop throughput"]
    assert ratio == pytest.approx(bare["seconds"] / pipeline["seconds"])
    rows = list(csv.DictReader((out / "speed.csv").open()))
    loaders = ["loader (per-image)", "loader (on-device)"]
    assert [row["variant"] for row in rows] == [*figures["variants"], *loaders]
    # the training loader alone, both ways, side by side
    assert list(figures["loaders"]) == loaders and min(figures["loaders"].values()) > 0
    assert figures["loader_images_per_second"] == figures["loaders"]["loader (per-image)"]
    for row in rows[-2:]:
        rate = figures["loaders"][row["variant"]]
        assert float(row["images/s"]) == pytest.approx(rate)
        assert float(row["ms/step"]) == pytest.approx(1000 * 16 / rate)
    assert figures["ratios"]["on-device / per-image loader throughput"] == pytest.approx(
        figures["loaders"]["loader (on-device)"] / figures["loaders"]["loader (per-image)"]
    )
    assert (out / "speed.png").stat().st_size > 0 and (out / "speed.md").is_file()


def test_the_overhead_part_costs_each_part_of_the_pipeline(arrays: Path, tmp_path: Path) -> None:
    out = tmp_path / "overhead"
    result = benchmark(
        out, "speed", arrays, "--overhead", "--steps", "3", "--warmup", "1", *SMALL_MODEL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["part"].strip(): row for row in csv.DictReader((out / "overhead.csv").open())}
    bare = float(rows["bare loop (forward, loss, backward, AdamW step)"]["ms/step"])
    pipeline = rows["pipeline (scripts/train.py)"]
    assert float(pipeline["cost (ms/step)"]) == pytest.approx(float(pipeline["ms/step"]) - bare)
    switched = [name for name in rows if name.endswith(": off")]
    # SMALL_MODEL trains without the average: there is no weight average to switch off
    assert len(switched) == 5 and not any("weight average" in name for name in switched)
    for name in switched:
        cost = float(pipeline["ms/step"]) - float(rows[name]["ms/step"])
        assert float(rows[name]["cost (ms/step)"]) == pytest.approx(cost, abs=0.01)
    loop = rows["the loop itself (every part above off)"]
    assert float(loop["cost (ms/step)"]) == pytest.approx(float(loop["ms/step"]) - bare, abs=0.01)


def test_the_alternated_ratio_reports_each_data_path_with_its_spread(
    arrays: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ratio"
    result = benchmark(
        out, "speed", arrays, "--rounds", "2", "--steps", "2", "--warmup", "1", *SMALL_MODEL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["data path"]: row for row in csv.DictReader((out / "ratio.csv").open())}
    assert list(rows) == ["per-image loader", "drawn on the device"]
    for row in rows.values():
        bare, piped = float(row["bare loop (ms/step)"]), float(row["pipeline (ms/step)"])
        low, high = map(float, row["ratio spread"].split(" .. "))
        assert low <= float(row["ratio"]) <= high and low > 0
        low, high = map(float, row["cost spread (ms)"].split(" .. "))
        assert low <= float(row["fixed cost (ms)"]) <= high
        # the medians of the rounds' values, not the values of the medians: close, not equal
        assert float(row["fixed cost (ms)"]) == pytest.approx(piped - bare, abs=0.5 * piped)
    assert "2 rounds of 2 steps (after 1), batch 16" in result.stdout
    assert "data.batch_size=16" in (out / "ratio.md").read_text()
