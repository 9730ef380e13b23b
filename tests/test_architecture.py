"""The layering of docs/architecture.md holds: every subpackage is one stage, and no module imports
a module of a later stage (read from the source with ``ast``: every import, also those inside
functions and under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "tradeoff_search"
TOP = "cli"  # the stage of the package's own __init__ and __main__


def stages() -> dict[str, int]:
    """Subpackage name → its stage's row in the table of docs/architecture.md (0 = the lowest)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Stages, lowest first", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    found: dict[str, int] = {}
    for index, row in enumerate(rows):
        for package in re.findall(r"`(\w+)`", row.split("|")[2]):
            assert package not in found, f"docs/architecture.md: {package} is in two stages"
            found[package] = index
    return found


def stage_of(path: Path) -> str:
    """The subpackage ``path`` belongs to (the package's top-level files belong to the cli's stage)."""
    relative = path.relative_to(PACKAGE).parts
    return relative[0] if len(relative) > 1 else TOP


def imported_packages(path: Path) -> set[str]:
    """The subpackages of the package that ``path`` imports from, by name (``spec``, …); a public
    name of the package itself counts as the top stage's."""
    names = set()
    subpackages = {init.parent.name for init in PACKAGE.glob("*/__init__.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "tradeoff_search":
            names |= {alias.name if alias.name in subpackages else TOP for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tradeoff_search."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tradeoff_search.")}
    return names


def test_every_subpackage_is_one_stage_of_the_table() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    table = set(stages())
    assert packages - table == set(), "subpackages missing from docs/architecture.md's table"
    assert table - packages == set(), "docs/architecture.md names subpackages that do not exist"
    assert {path.name for path in PACKAGE.glob("*.py")} == {"__init__.py", "__main__.py"}, "modules outside a stage"


def test_no_module_imports_one_of_a_later_stage() -> None:
    stage = stages()
    upward = [
        f"{path.relative_to(PACKAGE)} ({stage_of(path)}) imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in sorted(imported_packages(path))
        if name in stage and stage[name] > stage[stage_of(path)]
    ]
    assert upward == []


OPTUNA_ADAPTER = PACKAGE / "stores" / "_optuna_adapter.py"


def optuna_privates() -> set[str]:
    """The private names of Optuna's study, trial and storage objects (``_storage``, ``_trial_id``, …)."""
    import optuna

    storage = optuna.storages.InMemoryStorage()
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "architecture")
    study = optuna.Study("architecture", storage)
    trial = optuna.Trial(study, storage.create_new_trial(study_id))
    objects = [study, trial, storage.get_trial(trial._trial_id), optuna.storages.RDBStorage, storage]
    names = {name for item in objects for name in [*dir(item), *getattr(item, "__dict__", {})]}
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def optuna_private_uses(path: Path, privates: set[str]) -> list[str]:
    """Where ``path`` imports a private module or name of Optuna, or reads a private attribute of
    one of its objects (any ``x._name`` of ``privates`` but ``self._name``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and node.attr in privates:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
            continue
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "optuna" and any(part.startswith("_") for part in parts[1:]):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {module}")
    return found


def test_only_the_optuna_adapter_uses_optuna_privates() -> None:
    privates = optuna_privates()
    assert {"_storage", "_study_id", "_trial_id", "_pop_waiting_trial_id"} <= privates
    used = [use for path in sorted(PACKAGE.rglob("*.py")) if path != OPTUNA_ADAPTER
            for use in optuna_private_uses(path, privates)]  # fmt: skip
    assert used == [], "Optuna's internals belong in stores/_optuna_adapter.py"
