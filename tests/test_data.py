from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tradeoff_search import Dataset, SpecError, StudySpec, load_dataset


def _spec(write_spec, data: str) -> StudySpec:
    return StudySpec.load(write_spec(f"[data]\n{data}\n"))


def test_sklearn_split_is_stratified_seeded_and_scaled(write_spec) -> None:
    spec = _spec(write_spec, 'source = "sklearn:digits"\nvalidation_fraction = 0.25\ntest_fraction = 0.2')
    data = load_dataset(spec)
    total = len(data.y_train) + len(data.y_val) + len(data.y_test)
    assert total == 1797
    assert len(data.y_test) == pytest.approx(0.2 * total, abs=1)
    assert len(data.y_val) == pytest.approx(0.25 * total, abs=1)
    assert data.n_classes == 10 and data.input_shape == (64,)
    assert data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    # stratified: every class in every split, in about the same share
    for y in (data.y_train, data.y_val, data.y_test):
        shares = np.bincount(y, minlength=10) / len(y)
        np.testing.assert_allclose(shares, 0.1, atol=0.02)
    again = load_dataset(spec)
    np.testing.assert_array_equal(again.x_test, data.x_test)


def test_balanced_class_weights(write_spec) -> None:
    data = load_dataset(_spec(write_spec, 'source = "sklearn:breast_cancer"\nclass_weight = "balanced"'))
    assert data.n_classes == 2
    weights = data.class_weight
    assert weights is not None and weights[0] > 1 > weights[1]


def test_csv_with_text_labels(write_spec, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["f1,f2,label"] + [f"{a:.3f},{b:.3f},{'cat' if a > 0 else 'dog'}" for a, b in rng.normal(size=(60, 2))]
    (tmp_path / "d.csv").write_text("\n".join(rows), encoding="utf-8")
    data = load_dataset(_spec(write_spec, 'source = "csv:d.csv"\ntarget = "label"'))
    assert data.input_shape == (2,) and data.n_classes == 2


@pytest.mark.parametrize(
    ("csv", "key", "expected"),
    [
        ("a,b\n1,x\n2,y\n", "data.target", "a column of d.csv"),
        ("a,y\n1,0\n,1\n" + "3,0\n4,1\n" * 10, "data.missing", "column 'a' of d.csv is empty in 1 rows"),
        ("a,y\n" + "1,0\n" * 20, "data.source", "at least 2 classes"),
        ("a,y\n1,0\n2,1\n3,0\n", "data.source", "enough rows"),
    ],
)
def test_bad_csv(write_spec, tmp_path: Path, csv: str, key: str, expected: str) -> None:
    (tmp_path / "d.csv").write_text(csv, encoding="utf-8")
    spec = _spec(write_spec, 'source = "csv:d.csv"\ntarget = "y"')
    with pytest.raises(SpecError, match=expected) as caught:
        load_dataset(spec)
    assert caught.value.key == key


def test_npz_loads_plain_arrays_and_refuses_pickles(write_spec, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ok.npz", x=rng.normal(size=(50, 4, 3)), y=np.arange(50) % 2)
    assert load_dataset(_spec(write_spec, 'source = "npz:ok.npz"')).input_shape == (4, 3)  # scaled, not flattened
    np.savez(tmp_path / "bad.npz", x=np.array([{"a": 1}] * 50, dtype=object), y=np.arange(50) % 2)
    with pytest.raises(SpecError, match="allow_pickle"):
        load_dataset(_spec(write_spec, 'source = "npz:bad.npz"'))


def test_from_arrays_encodes_labels() -> None:
    x = np.zeros((3, 2))
    data = Dataset.from_arrays(x, np.array(["b", "a", "c"]), x[:2], np.array(["a", "c"]))
    assert data.y_train.tolist() == [1, 0, 2] and data.y_val.tolist() == [0, 2] and data.n_classes == 3


X4, Y4 = np.arange(8.0).reshape(4, 2), np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ((X4, Y4[:3], X4, Y4), r"y_train: expected one label per row of x_train, shape \(4,\), got shape \(3,\)"),
        ((X4, Y4, X4[:3], Y4), r"y_val: expected one label per row of x_val, shape \(3,\), got shape \(4,\)"),
        ((X4, np.eye(2)[Y4], X4, Y4), r"y_train: .* got shape \(4, 2\) \(one-hot labels: pass their argmax\)"),
        ((np.where(X4 > 6, np.nan, X4), Y4, X4, Y4), "x_train: expected finite numbers, got 1 NaN"),
        ((X4[:, 0], Y4, X4, Y4), r"x_train: expected real numbers of shape \(rows, features...\)"),
        ((X4, Y4, X4[:, :1], Y4), r"x_val: expected rows of shape \(2,\) like x_train's, got \(1,\)"),
        ((X4, Y4, X4, Y4 + 1), r"y_train: expected every class of y_val, got none of \[2\]"),
        ((X4, Y4 * 0, X4, Y4 * 0), "y_train, y_val: expected at least 2 classes"),
    ],
)
def test_from_arrays_names_the_bad_array(arrays: tuple[np.ndarray, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dataset.from_arrays(*arrays)


def test_mnist1d_is_generated_locally_with_its_own_test_set(write_spec) -> None:
    data = load_dataset(_spec(write_spec, 'source = "mnist1d"\ninput_shape = [40, 1]\nvalidation_fraction = 0.2'))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (3200, 800, 1000)
    assert data.input_shape == (40, 1) and data.n_classes == 10


def test_input_shape_must_hold_the_features(write_spec) -> None:
    with pytest.raises(SpecError, match=r"data.input_shape = \[8, 9\]: expected a shape of 64 features"):
        load_dataset(_spec(write_spec, 'source = "sklearn:digits"\ninput_shape = [8, 9]'))
    data = load_dataset(_spec(write_spec, 'source = "sklearn:digits"\ninput_shape = [8, 8, 1]'))
    assert data.input_shape == (8, 8, 1)


def test_a_column_of_numbers_but_for_a_few_values_says_what_it_is(write_spec, tmp_path: Path) -> None:
    """At least 90% numbers: refused until the spec says the rest are missing or the column is text."""
    rows = [f"{i},{'?' if i % 20 == 3 else i % 7},{'low' if i % 2 else i},{i % 2}" for i in range(60)]
    (tmp_path / "d.csv").write_text(
        "a,b,words,y\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )  # b: 57 numbers and 3 "?"
    source = 'source = "csv:d.csv"\ntarget = "y"\n'
    with pytest.raises(SpecError, match=r'column \'b\' of d.csv holds numbers but for "\?" in rows 5, 25, 45') as e:
        load_dataset(_spec(write_spec, source))
    assert e.value.key == "data.missing_values"  # "words" is half numbers: text, as it was
    imputed = load_dataset(_spec(write_spec, source + 'missing_values = ["?"]\nmissing = "impute"'))
    b = imputed.preprocessing["columns"][1]  # type: ignore[index]
    assert b == {"name": "b", "kind": "number", "fill": 3.0}  # the median of the train split's numbers
    text = load_dataset(_spec(write_spec, source + 'text_columns = ["a", "b"]'))
    a, b = text.preprocessing["columns"][:2]  # type: ignore[index]
    assert a["kind"] == b["kind"] == "category" and "?" in b["categories"]
