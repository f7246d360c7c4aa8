"""The summary of ``scripts/gpu_check.sh``: one Markdown block from the files it writes
(the GPU tests' report, the speed benchmark, the fixed cost per step), ready to paste into
docs/results.md."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

# The check's files (scripts/gpu_check.sh): the GPU tests' JUnit report and output, the speed
# benchmark of the default model and the fixed cost of the tiny one.
CHECK_FILES = {
    "tests": "tests.xml",
    "test_output": "tests.txt",
    "speed": "default/speed.json",
    "overhead": "overhead/overhead.csv",
}
PEAK_LINE = re.compile(r"\[gpu\] (?P<test>.+): peak GPU memory (?P<mib>\d+) MiB")


def check_summary(folder: Path) -> str:
    """One Markdown block from the files of ``scripts/gpu_check.sh`` in ``folder`` (what
    :data:`CHECK_FILES` names): the GPU tests passed, images/s per variant, the fixed cost
    per step and the peak memory, ready to paste into docs/results.md. A missing file is
    named as missing rather than failing the summary."""
    paths = {name: folder / relative for name, relative in CHECK_FILES.items()}
    machine_name = _speed_machine(paths["speed"]) if paths["speed"].is_file() else "unknown"
    lines = [
        f"**GPU check** on {machine_name}",
        f"- tests (`pytest -m gpu`): {_test_counts(paths['tests'])}",
    ]
    if paths["test_output"].is_file():
        peaks = [m.groupdict() for m in PEAK_LINE.finditer(paths["test_output"].read_text())]
        if peaks:
            shown = "; ".join(f"{p['test']} {int(p['mib']):,} MiB" for p in peaks)
            lines.append(f"- peak GPU memory of the tests: {shown}")
    if paths["speed"].is_file():
        lines += _speed_lines(json.loads(paths["speed"].read_text()))
    else:
        lines.append(f"- speed: {CHECK_FILES['speed']} missing (the benchmark did not finish)")
    lines.append(f"- fixed cost per step (tiny model, batch 32): {_fixed_cost(paths['overhead'])}")
    return "\n".join(lines) + "\n"


def _speed_machine(path: Path) -> str:
    return str(json.loads(path.read_text()).get("machine", "unknown"))


def _test_counts(path: Path) -> str:
    if not path.is_file():
        return f"{CHECK_FILES['tests']} missing (pytest did not run)"
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    return (
        f"{passed} passed, {count['failures'] + count['errors']} failed, "
        f"{count['skipped']} skipped, of {count['tests']}"
    )


def _speed_lines(speed: dict[str, Any]) -> list[str]:
    overrides = " ".join(o for o in speed.get("overrides", []) if not o.startswith("data.path="))
    lines = [
        f"- images/s, default model (`{overrides}`), median step after warm-up:",
        "",
        "  | variant | images/s | ms/step | peak memory (MiB) |",
        "  | --- | --- | --- | --- |",
    ]
    for name, result in speed["variants"].items():
        peak = result.get("peak_memory_mb")
        lines.append(
            f"  | {name} | {result['images_per_second']:,.0f} | {1000 * result['seconds']:.2f} "
            f"| {'-' if peak is None else f'{peak:,.0f}'} |"
        )
    for name, rate in speed.get("loaders", {}).items():
        lines.append(f"  | {name} | {rate:,.0f} | - | - |")
    lines.append("")
    ratio = speed.get("ratios", {}).get("pipeline / bare loop throughput")
    if ratio is not None:
        lines.append(f"- pipeline / bare loop throughput: {ratio:.2f}")
    return lines


def _fixed_cost(path: Path) -> str:
    if not path.is_file():
        return f"{CHECK_FILES['overhead']} missing (the overhead benchmark did not finish)"
    with path.open() as handle:
        rows = {row["part"].strip(): row for row in csv.DictReader(handle)}
    pipeline = next((row for part, row in rows.items() if part.startswith("pipeline")), None)
    bare = next((row for part, row in rows.items() if part.startswith("bare loop")), None)
    if pipeline is None or bare is None:
        return f"{CHECK_FILES['overhead']} has no pipeline and bare-loop rows"
    return (
        f"{float(pipeline['cost (ms/step)']):.2f} ms (pipeline {float(pipeline['ms/step']):.2f} "
        f"ms against the bare loop's {float(bare['ms/step']):.2f} ms)"
    )
