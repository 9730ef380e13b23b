"""Tables with text columns: one-hot with a cap and "other", missing values, and the JSON a
deployment applies with the plain-Python code docs/data.md shows."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradeoff_search import SpecError, StudySpec, load_dataset
from tradeoff_search.data._encoding import TableEncoding

from .conftest import CITIES, REPO, table_frame


def _docs_preprocess() -> Callable[[dict[str, Any], dict[str, Any]], list[float]]:
    """docs/data.md's ``preprocess``, run as the page shows it."""
    block = re.search(
        r"```python\n(import json\nimport math\n.*?)\n\n\ndocument = ",
        (REPO / "docs" / "data.md").read_text(encoding="utf-8"),
        re.S,
    )
    assert block, "docs/data.md's preprocess() example"
    namespace: dict[str, Any] = {}
    exec(block[1], namespace)  # our own docs' code
    return namespace["preprocess"]


def _spec(write_spec: Callable[..., Path], tmp_path: Path, frame: pd.DataFrame, extra: str = "") -> StudySpec:
    frame.to_csv(tmp_path / "table.csv", index=False)
    return StudySpec.load(write_spec(f'[data]\nsource = "csv:table.csv"\ntarget = "label"\n{extra}\n'))


def test_text_columns_are_one_hot_and_the_json_reproduces_the_arrays(write_spec, tmp_path: Path) -> None:
    frame = table_frame(300)
    frame.loc[[3, 50, 77], "city"] = None
    frame.loc[[5, 60], "age"] = None
    spec = _spec(write_spec, tmp_path, frame, 'missing = "impute"\nmax_categories = 4')
    data = load_dataset(spec)
    document = data.preprocessing
    assert document is not None and json.loads(json.dumps(document)) == document  # plain JSON
    columns = {c["name"]: c for c in document["columns"]}
    assert list(columns) == ["age", "city", "plan", "income"]
    # The cap: 3 frequent cities and "other"; the plan's 2 values need no "other".
    assert len(columns["city"]["categories"]) == 3 and set(columns["city"]["categories"]) < set(CITIES)
    assert columns["city"]["other"] is True and columns["plan"] == {
        "name": "plan", "kind": "category", "fill": columns["plan"]["fill"], "categories": ["basic", "gold"],
        "other": False,
    }  # fmt: skip
    assert columns["age"]["fill"] == pytest.approx(float(np.nanmedian(frame["age"])), abs=3)
    assert data.input_shape == (1 + 4 + 2 + 1,) and document["input_shape"] == [8]
    assert document["classes"] == ["churned", "stayed"]

    # Every split's rows are docs/data.md's preprocess() of a raw row of the file.
    preprocess = _docs_preprocess()
    raw = pd.read_csv(tmp_path / "table.csv")
    applied = np.array([preprocess(row, document) for row in raw.drop(columns="label").to_dict("records")])
    for split in (data.x_train, data.x_val, data.x_test):
        distances = np.abs(split[:, None, :] - applied[None, :, :]).max(axis=2).min(axis=1)
        assert distances.max() < 1e-4


def test_unseen_categories_at_test_time(tmp_path: Path) -> None:
    train = table_frame(200).drop(columns="label")
    later = pd.DataFrame({"age": [30.0, 50.0], "city": ["paris", "zurich"], "plan": ["gold", "platinum"],
                          "income": [2.0, 4.0]})  # fmt: skip
    encoding = TableEncoding.fit(train, impute=False, max_categories=4)
    encoded = encoding.transform(later)  # scikit-learn's own transform: no error on unseen values
    document = encoding.to_dict(np.ones(encoded.shape[1]), np.zeros(encoded.shape[1]), (encoded.shape[1],), [0, 1])
    preprocess = _docs_preprocess()
    np.testing.assert_allclose([preprocess(row, document) for row in later.to_dict("records")], encoded)
    city = slice(1, 5)
    assert encoded[1, city].tolist() == [0, 0, 0, 1]  # zurich: "other"
    assert encoded[1, 5:7].tolist() == [0, 0]  # platinum: plan has no "other", so no indicator


def test_missing_values_are_refused_by_default_naming_column_and_rows(write_spec, tmp_path: Path) -> None:
    frame = table_frame(60)
    frame.loc[[1, 2, 9], "city"] = None
    with pytest.raises(SpecError, match=r"column 'city' of table.csv is empty in 3 rows") as caught:
        load_dataset(_spec(write_spec, tmp_path, frame))
    assert caught.value.key == "data.missing" and 'missing = "impute"' in str(caught.value)
    with pytest.raises(SpecError, match=r"data.missing = \"impute\": expected \"error\" \(only csv"):
        StudySpec.from_dict({"data": {"source": "sklearn:iris", "missing": "impute"}})
