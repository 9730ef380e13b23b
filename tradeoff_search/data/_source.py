"""A kind of data source (``sklearn:NAME``, ``csv:PATH``, …): one class that checks the ``[data]``
keys it takes when a spec loads and reads its examples when a study needs them.

The kinds are registered in ``tradeoff_search.data._sources``; adding a source is adding one
class there. Reading imports what it needs (pandas, Pillow, scikit-learn) inside ``read``: spec
checks stay cheap.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tradeoff_search.rules import SpecError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tradeoff_search.data._section import DataSection


@dataclass(frozen=True)
class Examples:
    """What a source reads: the features (an array, or a table whose text columns are encoded
    once the rows are split), the labels, how many of the last rows are the source's own test
    set (0: the test split is drawn by ``test_fraction``), and the sha256 of the bytes they were
    read from (None for a built-in source: a library's data, not a file a study could see change)."""

    x: np.ndarray | pd.DataFrame
    y: np.ndarray
    own_test: int = 0
    digest: str | None = None


class Source(abc.ABC):
    """One kind of ``data.source``."""

    kind: ClassVar[str]  # what data.source starts with
    form: ClassVar[str]  # how messages show it: "csv:PATH", or "mnist1d" for a kind without a location
    # [data] keys of this kind alone, each with what a source of another kind is told it does not
    # do ("take one"): such a key must keep its default there.
    keys: ClassVar[Mapping[str, str]] = {}
    rank: ClassVar[int] = 1  # dimensions of one example, unless data.input_shape says otherwise

    def accepts(self, source: str) -> bool:
        """``source`` (a ``data.source``) is of this kind, with a location if the kind takes one."""
        if ":" not in self.form:
            return source == self.kind
        kind, _, location = source.partition(":")
        return kind == self.kind and location != ""

    def features(self, data: DataSection) -> int | None:
        """The features of one example, if known before reading (for the spec's memory check)."""
        return None

    def check(self, data: DataSection, spec_file: Path) -> None:  # noqa: B027 - a kind may have nothing to check
        """Raise :class:`SpecError` for a key of ``data`` this kind cannot read (relative paths
        start at ``spec_file``'s folder)."""

    @abc.abstractmethod
    def read(self, data: DataSection, spec_file: Path) -> Examples:
        """The examples ``data`` names; :class:`SpecError` for what they cannot be read as."""


def read_bytes(data: DataSection, spec_file: Path) -> tuple[bytes, str]:
    """The source file's bytes and their sha256: what is parsed is what is hashed, however the
    file changes meanwhile. :class:`SpecError` naming ``data.source`` if it cannot be read."""
    path = existing_file(data, spec_file)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SpecError(spec_file, "data.source", data.source, f"a readable file ({error.strerror})") from None
    return raw, hashlib.sha256(raw).hexdigest()


def existing_file(data: DataSection, spec_file: Path) -> Path:
    """The source's file, or :class:`SpecError` naming ``data.source`` if there is none."""
    path = data.located(spec_file)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "not found"
        raise SpecError(spec_file, "data.source", data.source, f"an existing file ({path} {problem})")
    return path
