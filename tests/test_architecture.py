"""The layering of docs/architecture.md holds: every module is in one stage, and none imports a
module of a later stage (read from the source with ``ast``: every import, also those inside
functions and under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "tradeoff_search"


def stages() -> dict[str, int]:
    """Module name → its stage's row in the table of docs/architecture.md (0 = the lowest)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text.split("## Stages, lowest first", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    found: dict[str, int] = {}
    for index, row in enumerate(rows):
        for module in re.findall(r"`(_\w+)`", row.split("|")[2]):
            assert module not in found, f"docs/architecture.md: {module} is in two stages"
            found[module] = index
    return found


def imported_modules(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, by name (``_spec``, …)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "tradeoff_search":
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tradeoff_search."):
            imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tradeoff_search.")}
    return imported


def test_every_module_is_in_one_stage_of_the_table() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    table = set(stages())
    assert modules - table == set(), "modules missing from docs/architecture.md's table"
    assert table - modules == set(), "docs/architecture.md names modules that do not exist"


def test_no_module_imports_one_of_a_later_stage() -> None:
    stage = stages()
    upward = [
        f"{path.stem} ({stage[path.stem]}) imports {name} ({stage[name]})"
        for path in sorted(PACKAGE.glob("*.py"))
        for name in sorted(imported_modules(path))
        if name in stage and stage[name] > stage[path.stem]
    ]
    assert upward == []
