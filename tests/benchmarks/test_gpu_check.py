"""``scripts/gpu_check.sh``: one line and status 1 without a GPU; its summary block, built from
the files the check writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoencoder.benchmarks.gpu_check import check_summary
from tests.conftest import ROOT

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="1" skipped="1" tests="5" time="150.0"></testsuite></testsuites>"""
TEST_OUTPUT = """....
[gpu] the GPU experiment's fit and test: peak GPU memory 2345 MiB
.
[gpu] test_metrics_are_computed_in_fp32_under_bf16_autocast_on_cuda: peak GPU memory 81 MiB
"""
OVERHEAD = """part,ms/step,cost (ms/step)
"bare loop (forward, loss, backward, AdamW step)",2.5,
pipeline (scripts/train.py),4.25,1.75
  weight average (EMA): off,4.0,0.25
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_a_gpu_the_check_says_so_in_one_line_and_fails(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")},
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "no CUDA device" in line
    assert not (tmp_path / "out").exists()


def test_the_summary_gives_tests_speed_fixed_cost_and_peak_memory(tmp_path: Path) -> None:
    (tmp_path / "tests.xml").write_text(JUNIT)
    (tmp_path / "tests.txt").write_text(TEST_OUTPUT)
    (tmp_path / "default").mkdir()
    speed = {
        "machine": "NVIDIA H100 80GB HBM3, torch 2.9.0",
        "loaders": {"loader (per-image)": 9000.0, "loader (on-device)": 250000.0},
        "variants": {
            "pipeline": {"seconds": 0.02, "images_per_second": 12800.0, "peak_memory_mb": 3000.4},
            "bare": {"seconds": 0.016, "images_per_second": 16000.0, "peak_memory_mb": 2900.0},
        },
        "ratios": {"pipeline / bare loop throughput": 0.8},
        "overrides": ["trainer=gpu", "data=arrays", "data.path=/data", "experiment=cifar10_gpu"],
    }
    (tmp_path / "default" / "speed.json").write_text(json.dumps(speed))
    (tmp_path / "overhead").mkdir()
    (tmp_path / "overhead" / "overhead.csv").write_text(OVERHEAD)

    summary = check_summary(tmp_path)
    assert summary.startswith("**GPU check** on NVIDIA H100 80GB HBM3, torch 2.9.0\n")
    assert "- tests (`pytest -m gpu`): 3 passed, 1 failed, 1 skipped, of 5" in summary
    assert "the GPU experiment's fit and test 2,345 MiB" in summary
    assert "`trainer=gpu data=arrays experiment=cifar10_gpu`" in summary  # no local path
    assert "| pipeline | 12,800 | 20.00 | 3,000 |" in summary
    assert "| loader (on-device) | 250,000 | - | - |" in summary
    assert "- pipeline / bare loop throughput: 0.80" in summary
    assert "1.75 ms (pipeline 4.25 ms against the bare loop's 2.50 ms)" in summary


def test_the_summary_names_what_is_missing(tmp_path: Path) -> None:
    summary = check_summary(tmp_path)
    assert "tests.xml missing" in summary
    assert "default/speed.json missing" in summary
    assert "overhead/overhead.csv missing" in summary
