"""A spec section: a frozen dataclass whose every field names the rule that parses its key.

``[data]`` and the other sections are declared with :func:`setting` and read by
:func:`parse_section`; a section's :meth:`Section.check` then checks its keys together.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tradeoff_search.rules._errors import SpecError
from tradeoff_search.rules._rules import Rule


def setting(rule: Rule, default: Any = dataclasses.MISSING) -> Any:
    """A section's field: its key is parsed by ``rule``, and required unless it has a ``default``."""
    return dataclasses.field(default=default, metadata={"rule": rule})


def spec_rule(section: type, key: str) -> Rule:
    """The rule of a spec key (e.g. ``LatencySection``'s ``runtime``), for a parameter that is the
    same setting."""
    rule: Rule = next(f.metadata["rule"] for f in dataclasses.fields(section) if f.name == key)
    return rule


class Section:
    """What every section shares: a check of its keys together, once each has passed its rule."""

    def check(self, spec_file: Path) -> None:
        """Raise :class:`SpecError` naming ``spec_file`` for keys that do not fit together (none here)."""


def parse_section(kind: type, table: Any, source: Path, section: str) -> Any:
    """The section ``kind`` (a dataclass of :func:`setting` fields) from its TOML ``table``: every
    key known, every value parsed by its rule, every required key given."""
    if not isinstance(table, dict):
        raise SpecError(source, section, table, "a table")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    for key, value in table.items():
        if key not in fields:
            raise SpecError(source, f"{section}.{key}", value, f"one of the keys {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{section}.{name}"
        if name in table:
            kwargs[name] = f.metadata["rule"].parse(table[name], source, key)
        elif f.default is dataclasses.MISSING:
            raise SpecError(source, key, None, "a value (this key is required)")
    return kind(**kwargs)
