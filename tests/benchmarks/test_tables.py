"""A benchmark table: the rows it prints are the rows it writes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from autoencoder.benchmarks.tables import Table


def test_a_table_prints_and_writes_the_same_rows(tmp_path: Path) -> None:
    table = Table("t", ("name", "psnr"), formats={"psnr": 2})
    table.add(name="pca", psnr=26.4512)
    table.add(name="ours", psnr=None)
    with pytest.raises(ValueError, match="unknown columns"):
        table.add(name="x", ssim=1.0)
    csv_path, md_path = table.write(tmp_path, "t")
    assert list(csv.DictReader(csv_path.open())) == [
        {"name": "pca", "psnr": "26.4512"},
        {"name": "ours", "psnr": ""},
    ]
    assert md_path.read_text().splitlines()[2:] == ["| pca | 26.45 |", "| ours | - |"]
