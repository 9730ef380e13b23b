"""``csv:PATH``: a table with a header; ``data.target`` names the label column, the others are
features (text columns one-hot encoded once the rows are split, see ``_encoding``).

A column of numbers but for a few values (``?`` written for a missing value, as UCI tables do,
or a stray word) is refused rather than encoded as categories: the rule is that at least
:data:`NUMERIC_SHARE` of its non-missing values read as numbers. The spec says which it is: those
values are missing (``missing_values``), or the column is text (``text_columns``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from tradeoff_search.data._source import Examples, Source, existing_file, read_bytes
from tradeoff_search.rules import SpecError, excerpt, show

if TYPE_CHECKING:
    import pandas as pd

    from tradeoff_search.data._section import DataSection

NUMERIC_SHARE = 0.9  # of a column's non-missing values, from which its other values are taken as a mistake
_SHOWN = 5  # values and rows a message names


class Csv(Source):
    """``csv:PATH``: the feature columns as read, and the labels."""

    kind = "csv"
    form = "csv:PATH"
    keys: ClassVar[Mapping[str, str]] = {
        "target": "take one",
        "missing": "have missing values",
        "missing_values": "have missing-value markers",
        "text_columns": "have text columns",
    }

    def check(self, data: DataSection, spec_file: Path) -> None:
        existing_file(data, spec_file)
        if data.target is None:
            raise SpecError(spec_file, "data.target", None, "the name of the label column (required for csv:)")
        if data.target in data.text_columns:
            expected = f"feature columns (not the label column, target = {show(data.target)})"
            raise SpecError(spec_file, "data.text_columns", list(data.text_columns), expected)

    def read(self, data: DataSection, spec_file: Path) -> Examples:
        import pandas as pd

        path, target = data.located(spec_file), data.target
        raw, digest = read_bytes(data, spec_file)
        try:  # the declared text columns as written ("007" stays "007"), the declared markers missing
            frame = pd.read_csv(
                io.BytesIO(raw), na_values=list(data.missing_values), dtype=dict.fromkeys(data.text_columns, str)
            )
        except (OSError, ValueError, pd.errors.ParserError) as error:
            raise SpecError(
                spec_file, "data.source", data.source, f"a readable CSV file ({excerpt(str(error), 120)})"
            ) from None
        if target not in frame.columns:
            raise SpecError(spec_file, "data.target", target, f"a column of {path.name} ({_header(frame)})")
        unknown = [c for c in data.text_columns if c not in frame.columns]
        if unknown:
            expected = f"columns of {path.name} ({excerpt(unknown[0])!r} is not one: {_header(frame)})"
            raise SpecError(spec_file, "data.text_columns", list(data.text_columns), expected)
        features = frame.drop(columns=[target])
        _check_features(features, data, spec_file, path.name)
        if frame[target].isna().any():
            raise SpecError(spec_file, "data.target", target, "a column without missing labels")
        return Examples(features, frame[target].to_numpy(), digest=digest)


def _header(frame: pd.DataFrame) -> str:
    """A few of the file's columns, cut short: the header is a line of the user's file."""
    shown = [excerpt(c, 30) for c in frame.columns[:8]] + (["…"] if len(frame.columns) > 8 else [])
    return ", ".join(shown)


def _check_features(features: pd.DataFrame, data: DataSection, spec_file: Path, name: str) -> None:
    """At least one column; none of numbers but for a few values; no empty cell unless
    ``missing = "impute"``; no infinite number."""
    from tradeoff_search.data._encoding import text_columns

    if features.shape[1] == 0:
        raise SpecError(spec_file, "data.source", data.source, "at least one feature column besides the target")
    for column in text_columns(features):
        if column not in data.text_columns:
            _check_mostly_numeric(features[column], data, spec_file, name)
    if data.missing == "error":
        for column in features.columns:
            empty = int(features[column].isna().sum())
            if empty:
                where = f"column {excerpt(column)!r} of {name} is empty in {empty} rows"
                raise SpecError(
                    spec_file, "data.missing", "error", f'no missing values, or missing = "impute" ({where})'
                )
    numeric = features.drop(columns=text_columns(features))
    for column in numeric.columns:
        if not np.isfinite(numeric[column].dropna().to_numpy(dtype=np.float64)).all():
            raise SpecError(
                spec_file, "data.source", data.source, f"finite values (column {excerpt(column)!r} has inf)"
            )


def _check_mostly_numeric(values: pd.Series, data: DataSection, spec_file: Path, name: str) -> None:
    """Refuse a text column whose non-missing values are numbers but for a few, naming those
    values and their rows as a spreadsheet numbers them (the header is row 1)."""
    import pandas as pd

    present = values.dropna()
    stray = present[pd.to_numeric(present, errors="coerce").isna()]
    if stray.empty or len(present) - len(stray) < NUMERIC_SHARE * len(present):
        return
    odd = list(dict.fromkeys(excerpt(v, 20) for v in stray))
    shown_odd = ", ".join(map(show, odd[:_SHOWN])) + (", …" if len(odd) > _SHOWN else "")
    rows = ", ".join([str(i + 2) for i in stray.index[:_SHOWN]] + (["…"] if len(stray) > _SHOWN else []))
    found = f"column {excerpt(values.name)!r} of {name} holds numbers but for {shown_odd} in rows {rows}"
    advice = (
        f"missing_values = {show(odd[:_SHOWN])} if they mark missing values, or text_columns = {show([values.name])}"
    )
    raise SpecError(spec_file, "data.missing_values", list(data.missing_values),
                    f"{advice} ({found}: {len(stray)} of {len(present)} values)")  # fmt: skip
