"""The error of the package's checks: bad input (a spec, a data file, a flag, an argument), in one
line: ``SOURCE: KEY = VALUE: expected WHAT``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class SpecError(ValueError):
    """A user input is invalid: says where (file or flag), which key, the value and what fits.

    The CLI prints ``str(error)`` as one line and exits with code 2.
    """

    def __init__(self, source: str | Path, key: str, value: Any, expected: str) -> None:
        self.source = str(source)
        self.key = key
        self.value = value
        self.expected = " ".join(expected.split())  # one line, whatever a library's message holds
        super().__init__(f"{self.source}: {key} = {show(value)}: expected {self.expected}")


def show(value: Any) -> str:
    """``value`` as a message shows it: JSON (control characters escaped), at most 200 characters."""
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return excerpt(shown, 200)


def excerpt(text: str, limit: int = 40) -> str:
    """At most ``limit`` characters of ``text`` (e.g. read from a user's file) for a message:
    one line, control characters shown as ``?``, the cut marked with ``…``."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"
