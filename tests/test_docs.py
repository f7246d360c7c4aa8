"""The documentation works as written: its links resolve, the commands the README names
exist, and its Python examples run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code blocks and inline code, where links are links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def code(text: str) -> str:
    """The code blocks and inline code, where commands are."""
    return "\n".join([*FENCE.findall(text), *INLINE_CODE.findall(FENCE.sub("", text))])


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE):
        base = slug(heading)
        name, number = base, 0
        while name in found:  # GitHub numbers repeated headings: name, name-1, name-2
            number += 1
            name = f"{base}-{number}"
        found.add(name)
    return found


def links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"[a-z]+:", target)  # https:, mailto:
    ]


def test_there_are_pages_and_links() -> None:
    assert len(PAGES) > 5 and sum(len(links(page)) for page in PAGES) > 30


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {resolved.name}")
    assert not broken, "\n".join(broken)


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def test_every_make_target_and_script_the_readme_names_exists() -> None:
    commands = code(README.read_text())
    targets = set(re.findall(r"\bmake ([\w-]+)", commands))
    scripts = set(re.findall(r"\bpython scripts/([\w-]+\.py)", commands))
    experiments = set(re.findall(r"\bexperiment=([a-z][a-z0-9_]*)", commands))
    assert {"train", "test"} <= targets and "train.py" in scripts
    assert targets <= make_targets(), targets - make_targets()
    assert [s for s in scripts if not (ROOT / "scripts" / s).is_file()] == []
    assert [
        e for e in experiments if not (ROOT / "conf" / "experiment" / f"{e}.yaml").is_file()
    ] == []


def run_python(source: str, folder: Path) -> subprocess.CompletedProcess:
    """``source`` as a file in ``folder``, run from there with the checkout importable."""
    (folder / "example.py").write_text(source)
    return subprocess.run(
        [sys.executable, "example.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_readme_python_example_runs_as_written_from_any_folder(tmp_path: Path) -> None:
    (example,) = code_blocks(README.read_text(), "python")
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/psnr" in result.stdout
    assert "phase 2" in result.stderr  # the callback's console line at the transition
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.py"]  # writes nothing


def test_the_encoder_example_registers_an_encoder_that_builds(tmp_path: Path) -> None:
    (example,) = code_blocks((ROOT / "docs" / "encoders.md").read_text(), "python")
    check = """
import torch
from autoencoder.models.encoders import Encoder
encoder = Encoder("convnext_tiny", weights=None, depth=2)
print(encoder.stage_names, tuple(encoder(torch.rand(1, 3, 32, 32)).shape))
"""
    result = run_python(example + check, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "['stem', 'stage1'] (1, 96, 8, 8)" in result.stdout
