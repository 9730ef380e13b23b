"""The two errors of the package's checks, in one shape: ``SOURCE: KEY = VALUE: expected WHAT``.

:class:`SpecError` is bad input (a spec, a data file, a flag, an argument); :class:`RunError` is a
run that cannot go on with an input that is fine (a study without a front to choose from, a
latency server that does not answer). Both are one line, whatever a library's message holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class _OneLine(Exception):
    """Where (a file, a flag, a function), which key, the value and what was expected."""

    def __init__(self, source: str | Path, key: str, value: Any, expected: str) -> None:
        self.source = str(source)
        self.key = key
        self.value = value
        self.expected = " ".join(expected.split())  # one line, whatever a library's message holds
        super().__init__(f"{self.source}: {key} = {show(value)}: expected {self.expected}")


class SpecError(_OneLine, ValueError):
    """A user input is invalid: says where (file or flag), which key, the value and what fits.

    The CLI prints ``str(error)`` as one line and exits with code 2.
    """


class RunError(_OneLine, RuntimeError, ValueError):
    """A run cannot go on, though its input is valid: the study has no front to choose from yet,
    a trial's model is not in MLflow, a latency server does not answer. Says where, which key,
    its value and what the run needed, as a :class:`SpecError` does.

    The CLI prints ``str(error)`` as one line and exits with code 2, as for a :class:`SpecError`.
    A ``ValueError`` too, as these failures were before they had an error of their own: a caller
    that catches ``ValueError`` still catches them.
    """


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
