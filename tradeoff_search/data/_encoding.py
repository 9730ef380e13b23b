"""Tables: text columns one-hot encoded, missing values imputed, and the fit as plain JSON.

Fitted on the train split only, with scikit-learn: ``OneHotEncoder(max_categories=N,
handle_unknown="infrequent_if_exist")`` per text column (its N - 1 most frequent categories, the
rest in one "other" indicator, which also takes categories first seen after the fit; without
rarer categories to group, an unseen one sets no indicator), ``SimpleImputer`` for missing values
(numbers: the median; text: the most frequent category).

:meth:`TableEncoding.to_dict` writes what was fitted, with the feature scaling that follows it, as
a JSON document a deployment applies with a few lines of plain code (docs/data.md shows them):
no Python ML library is needed to turn a raw row into the model's input.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

FORMAT = "tradeoff_search.preprocessing/1"


@dataclasses.dataclass(frozen=True)
class _Column:
    name: str
    imputer: SimpleImputer | None  # None: missing values were refused
    encoder: OneHotEncoder | None  # None: a numeric column


@dataclasses.dataclass(frozen=True)
class TableEncoding:
    """Raw table columns → float features, fitted on one split and applied to all."""

    columns: tuple[_Column, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, *, impute: bool, max_categories: int) -> TableEncoding:
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        columns = []
        for name in frame.columns:
            values = _column(frame, name)
            text = values.dtype == object
            imputer = None
            if impute:
                imputer = SimpleImputer(strategy="most_frequent" if text else "median", keep_empty_features=True)
                values = imputer.fit_transform(values)
            encoder = None
            if text:
                encoder = OneHotEncoder(
                    max_categories=max_categories, handle_unknown="infrequent_if_exist", sparse_output=False
                )
                encoder.fit(values)
            columns.append(_Column(str(name), imputer, encoder))
        return cls(tuple(columns))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for column in self.columns:
            values = _column(frame, column.name)
            if column.imputer is not None:
                values = column.imputer.transform(values)
            blocks.append(values if column.encoder is None else column.encoder.transform(values))
        return np.concatenate(blocks, axis=1).astype(np.float64)

    def to_dict(
        self, multiply: np.ndarray, add: np.ndarray, input_shape: tuple[int, ...], classes: list[Any]
    ) -> dict[str, Any]:
        """The fit as plain data; ``multiply`` and ``add`` are the scaling of each feature after it
        (``x * multiply + add``), ``input_shape`` the model's input without the batch, ``classes``
        the label of each class code the model outputs."""
        columns: list[dict[str, Any]] = []
        for column in self.columns:
            fill = None if column.imputer is None else _plain(column.imputer.statistics_[0])
            if column.encoder is None:
                columns.append({"name": column.name, "kind": "number", "fill": fill})
                continue
            infrequent = column.encoder.infrequent_categories_[0]
            rare = set() if infrequent is None else set(infrequent.tolist())
            frequent = [_plain(c) for c in column.encoder.categories_[0] if c not in rare]
            columns.append(
                {"name": column.name, "kind": "category", "fill": fill, "categories": frequent, "other": bool(rare)}
            )
        return {
            "format": FORMAT,
            "columns": columns,
            "multiply": [float(v) for v in multiply],
            "add": [float(v) for v in add],
            "input_shape": list(input_shape),
            "classes": classes,
        }


def preprocessing_file(document: dict[str, Any]) -> bytes:
    """``preprocessing.json`` of a fit's :meth:`TableEncoding.to_dict`: the bytes ``select`` ships
    and whose sha256 a trial records beside its model's (``model_sha256``)."""
    return (json.dumps(document, indent=1) + "\n").encode()


def text_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that hold anything but numbers (booleans count as text: two categories)."""
    import pandas as pd

    return [
        str(name)
        for name in frame.columns
        if not pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name])
    ]


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """One column as a (rows, 1) array: numbers as float64, anything else as text (NaN where missing)."""
    import pandas as pd

    series = frame[name]
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64).reshape(-1, 1)
    return series.map(lambda v: v if pd.isna(v) else str(v)).to_numpy(dtype=object).reshape(-1, 1)


def _plain(value: Any) -> Any:
    """A NumPy scalar as the JSON value it stands for."""
    return value.item() if isinstance(value, np.generic) else value
