"""The package's floors: a module imports only from its own floor or below, so the building
blocks never depend on the jobs that use them (docs/development.md, "Layout"); and no
module imports itself through others, inside a floor or across floors.

Every import statement counts, at the top of a module or inside a function: an import
deferred into a function still ties the two modules together."""

from __future__ import annotations

import ast
import re
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
    "inputs": 0,
    "field_metrics": 0,
    "precision": 0,
    "plotting": 0,
    # 1: building blocks
    "models": 1,
    "data": 1,
    "finetuning": 1,
    "finetuning_options": 1,
    "finetuning_rates": 1,
    "callbacks": 1,
    "start_score": 1,
    "bn_reestimation": 1,
    # 2: job plumbing
    "runs": 2,
    "validation": 2,
    "cli": 2,
    "sweeps": 2,
    "distributed": 2,
    "jobs": 2,
    "preflight": 2,
    "group_choices": 2,
    # 3: jobs
    "train": 3,
    "evaluate": 3,
    "pretrain": 3,
    "encode": 3,
    "examples": 3,
    "figures": 3,
    "benchmarks": 3,
    "search": 3,
}


def floor(module: str) -> int:
    """The floor of ``autoencoder.<top>...``."""
    return FLOORS[module.split(".")[1]]


def imports(path: Path) -> set[str]:
    """The package's names a module's import statements name, at any depth:
    ``from autoencoder.models import encoders`` names ``autoencoder.models`` and
    ``autoencoder.models.encoders``, whether that is a module or a class."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("autoencoder.")}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def module_name(path: Path) -> str:
    """``autoencoder.models.encoders`` for ``autoencoder/models/encoders.py``, and the
    package's name for its ``__init__.py``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package, ``__init__`` files included, and the package's modules
    it imports."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {module for module in imports(path) if module in paths and module != name}
        for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one
    module (Tarjan's algorithm), each sorted."""
    order: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        order[module] = lowest[module] = len(order)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in order:
                visit(imported)
                lowest[module] = min(lowest[module], lowest[imported])
            elif imported in stack:
                lowest[module] = min(lowest[module], order[imported])
        if lowest[module] == order[module]:
            component = [stack.pop()]
            while component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def test_every_module_has_a_floor() -> None:
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()}
    assert tops == set(FLOORS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_floor_or_below(path: Path) -> None:
    own = floor("autoencoder." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    above = {name: floor(name) for name in imports(path) if floor(name) > own}
    assert not above, f"floor {own} imports from higher floors: {above}"


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_inside_a_floor() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_floor_table_of_the_docs_lists_every_module_on_its_floor() -> None:
    """docs/development.md's table of floors names each module in the row of its floor
    (a package as ``models/``, its modules in the parentheses after it)."""
    docs = (PACKAGE.parent / "docs" / "development.md").read_text()
    rows = {
        int(line.split("|")[1].split(",")[0]): set(re.findall(r"`([\w/]+)`", line.split("|")[2]))
        for line in docs.splitlines()
        if re.match(r"\| \d, ", line)
    }
    for top, level in FLOORS.items():
        folder = PACKAGE / top
        if folder.is_dir():
            assert f"{top}/" in rows[level], f"{top}/ is not in floor {level}'s row"
            inside = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
            assert inside <= rows[level], f"{top}/: {sorted(inside - rows[level])} not listed"
        else:
            assert top in rows[level], f"{top} is not in floor {level}'s row"
