"""The ranking part (``scripts/benchmark.py rank``): a candidate against the baseline's
sweep, adopted only when its gain exceeds both seed spreads."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import run_script


def fake_sweep(folder: Path, values: list[float | None]) -> Path:
    folder.mkdir(parents=True)
    with (folder / "summary.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["job", "status", "seed", "test/psnr"])
        writer.writeheader()
        for job, value in enumerate(values):
            failed = value is None
            writer.writerow(
                {
                    "job": job,
                    "status": "FAILED" if failed else "COMPLETED",
                    "seed": job + 1,
                    "test/psnr": "" if failed else value,
                }
            )
    return folder


def test_a_candidate_is_adopted_only_when_its_gain_exceeds_both_spreads(tmp_path: Path) -> None:
    sweeps = {
        "base": (fake_sweep(tmp_path / "base", [25.0, 25.2]), ""),
        "clear": (fake_sweep(tmp_path / "clear", [25.6, 25.7]), "callbacks=ema"),
        "noisy": (fake_sweep(tmp_path / "noisy", [24.6, 26.0]), "model.lr=3e-3"),
        "failed": (fake_sweep(tmp_path / "failed", [None, 25.05]), "data.batch_size=32"),
        "running": (tmp_path / "running", "decoder.width=1.5"),
    }
    result = run_script(
        "benchmark.py",
        "--output",
        str(tmp_path / "out"),
        "rank",
        "--baseline",
        "base",
        *(f"--sweep={n}={folder}:{varied}" for n, (folder, varied) in sweeps.items()),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "out" / "ranking.csv").open()))
    assert [row["candidate"] for row in rows] == ["base", "clear", "noisy", "failed"]
    by_name = {row["candidate"]: row for row in rows}
    assert by_name["clear"]["adopt"] == "yes"  # +0.55 dB, spreads 0.1 and 0.2
    assert float(by_name["clear"]["gain"]) == pytest.approx(0.55)
    assert by_name["noisy"]["adopt"] == "no"  # +0.2 dB mean, but a 1.4 dB spread
    assert by_name["failed"]["seeds"] == "1" and by_name["failed"]["test/psnr"] == "25.05"
    assert by_name["clear"]["overrides"] == "callbacks=ema"
    assert "not finished yet: running" in (tmp_path / "out" / "ranking.md").read_text()
