"""``csv:PATH``: a table with a header; ``data.target`` names the label column, the others are
features (text columns one-hot encoded once the rows are split, see ``_encoding``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from tradeoff_search.data._source import Examples, Source, existing_file
from tradeoff_search.rules import SpecError, excerpt

if TYPE_CHECKING:
    import pandas as pd

    from tradeoff_search.data._section import DataSection


class Csv(Source):
    """``csv:PATH``: the feature columns as read, and the labels."""

    kind = "csv"
    form = "csv:PATH"
    keys: ClassVar[Mapping[str, str]] = {"target": "take one", "missing": "have missing values"}

    def check(self, data: DataSection, spec_file: Path) -> None:
        existing_file(data, spec_file)
        if data.target is None:
            raise SpecError(spec_file, "data.target", None, "the name of the label column (required for csv:)")

    def read(self, data: DataSection, spec_file: Path) -> Examples:
        import pandas as pd

        path, target = data.located(spec_file), data.target
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            raise SpecError(
                spec_file, "data.source", data.source, f"a readable CSV file ({excerpt(str(error), 120)})"
            ) from None
        if target not in frame.columns:
            # The header is a line of the user's file: name a few of its columns, cut short.
            shown = [excerpt(c, 30) for c in frame.columns[:8]] + (["…"] if len(frame.columns) > 8 else [])
            raise SpecError(spec_file, "data.target", target, f"a column of {path.name} ({', '.join(shown)})")
        features = frame.drop(columns=[target])
        _check_features(features, data, spec_file, path.name)
        if frame[target].isna().any():
            raise SpecError(spec_file, "data.target", target, "a column without missing labels")
        return Examples(features, frame[target].to_numpy())


def _check_features(features: pd.DataFrame, data: DataSection, spec_file: Path, name: str) -> None:
    """At least one column; no empty cell unless ``missing = "impute"``; no infinite number."""
    from tradeoff_search.data._encoding import text_columns

    if features.shape[1] == 0:
        raise SpecError(spec_file, "data.source", data.source, "at least one feature column besides the target")
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
