"""The package's floors: a module imports only from its own floor or below, so the building
blocks never depend on the jobs that use them (docs/development.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autoencoder"
FLOORS = {
    # 0: leaf helpers
    "errors": 0,
    "atomic": 0,
    "compat": 0,
    "config": 0,
    "checkpointing": 0,
    "param_groups": 0,
    "losses": 0,
    "grids": 0,
    "probe": 0,
    "loggers": 0,
    "run_folder": 0,
    "plotting": 0,
    # 1: building blocks
    "models": 1,
    "data": 1,
    "finetuning": 1,
    "finetuning_options": 1,
    "callbacks": 1,
    "start_score": 1,
    # 2: job plumbing
    "runs": 2,
    "validation": 2,
    "cli": 2,
    "sweeps": 2,
    "distributed": 2,
    "jobs": 2,
    # 3: jobs
    "train": 3,
    "evaluate": 3,
    "pretrain": 3,
    "encode": 3,
    "examples": 3,
    "figures": 3,
    "benchmarks": 3,
}


def floor(module: str) -> int:
    """The floor of ``autoencoder.<top>...``."""
    return FLOORS[module.split(".")[1]]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("autoencoder.")}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_a_floor() -> None:
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()}
    assert tops == set(FLOORS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_floor_or_below(path: Path) -> None:
    own = floor("autoencoder." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    above = {name: floor(name) for name in imports(path) if floor(name) > own}
    assert not above, f"floor {own} imports from higher floors: {above}"
