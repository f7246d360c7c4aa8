"""Benchmark results as one table: printed aligned, written as CSV and as Markdown."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def cell(value: Any, digits: int = 3) -> str:
    """A value as a table shows it: floats rounded, ``None`` as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class Table:
    """Rows of named columns. ``formats`` gives a column's float digits (default 3)."""

    title: str
    columns: Sequence[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, **values: Any) -> None:
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}; the table has {self.columns}")
        self.rows.append(values)

    def _cells(self) -> list[list[str]]:
        return [
            [cell(row.get(c), self.formats.get(c, 3)) for c in self.columns] for row in self.rows
        ]

    def text(self) -> str:
        """The table aligned for a terminal, with its title and notes."""
        cells = self._cells()
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(self.columns)]
        numeric = [
            all(isinstance(row.get(c), (int, float, type(None))) for row in self.rows)
            for c in self.columns
        ]

        def line(values: list[str]) -> str:
            return "  ".join(
                v.rjust(w) if n else v.ljust(w)
                for v, w, n in zip(values, widths, numeric, strict=True)
            )

        return "\n".join([self.title, line(list(self.columns)), *map(line, cells), *self.notes])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + " --- |" * len(self.columns)]
        lines += ["| " + " | ".join(r) + " |" for r in self._cells()]
        return "\n".join([*lines, *(["", *self.notes] if self.notes else [])]) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()

    def write(self, folder: Path, name: str) -> list[Path]:
        """Write ``name.csv`` and ``name.md`` into ``folder``; print the table."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{name}.csv", folder / f"{name}.md"]
        paths[0].write_text(self.csv())
        paths[1].write_text(self.markdown())
        print(self.text(), flush=True)
        return paths
