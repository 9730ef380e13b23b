"""Data sources (``sklearn:NAME``, ``csv:PATH``, ``npz:PATH``, ``images:FOLDER``, ``mnist1d``) →
split, encoded, scaled arrays."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search.spec._spec import SpecError, StudySpec, excerpt

if TYPE_CHECKING:
    import pandas as pd

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays (features float32, labels int 0..n_classes-1).

    The test split is never seen by the search; it is kept for the final evaluation of a chosen model.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    class_weight: dict[int, float] | None = None
    source: str | None = None  # the spec's data.source it was loaded from; None for a user's arrays
    # csv: raw columns → model input (encoding, imputation, scaling) as plain JSON, see _encoding
    preprocessing: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # The model has n_classes = largest label + 1 outputs: labels must be those classes' codes.
        for name in ("y_train", "y_val"):
            labels = getattr(self, name)
            if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0:
                raise ValueError(f"{name}: expected integer class codes 0..n_classes-1 (Dataset.from_arrays "
                                 f"encodes any labels), got {labels.dtype} labels")  # fmt: skip
        missing = sorted(set(range(self.n_classes)) - set(np.unique(self.y_train).tolist()))
        if missing:
            raise ValueError(f"y_train: expected every class code 0..{self.n_classes - 1}, got none of {missing[:10]} "
                             "(Dataset.from_arrays encodes any labels)")  # fmt: skip

    @property
    def summary(self) -> str:
        """E.g. ``"data sklearn:iris: 90 train, 30 validation, 30 test rows"``."""
        test = 0 if self.y_test is None else len(self.y_test)
        return f"data {self.source}: {len(self.y_train)} train, {len(self.y_val)} validation, {test} test rows"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max())) + 1

    @classmethod
    def from_arrays(cls, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> Dataset:
        """Wrap arrays a user already split; labels of any type are encoded to ``0..n_classes-1``.

        Raises:
            ValueError: naming the array: rows and labels of different lengths, labels that are not
                one per row, features that are not finite numbers, or train and validation rows
                of different shapes.
        """
        arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
        x = {name: np.asarray(arrays[name]) for name in ("x_train", "x_val")}
        y = {name: np.asarray(arrays[name]) for name in ("y_train", "y_val")}
        for (x_name, features), (y_name, labels) in zip(x.items(), y.items(), strict=True):
            if features.ndim < 2 or not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
                raise ValueError(f"{x_name}: expected real numbers of shape (rows, features...), got {features.dtype} "
                                 f"of shape {features.shape}")  # fmt: skip
            if not np.isfinite(features).all():
                raise ValueError(f"{x_name}: expected finite numbers, got {np.count_nonzero(~np.isfinite(features))} "
                                 "NaN or infinite values")  # fmt: skip
            if labels.ndim != 1 or len(labels) != len(features):
                raise ValueError(f"{y_name}: expected one label per row of {x_name}, shape ({len(features)},), "
                                 f"got shape {labels.shape} (one-hot labels: pass their argmax)")  # fmt: skip
        if x["x_val"].shape[1:] != x["x_train"].shape[1:]:
            raise ValueError(f"x_val: expected rows of shape {x['x_train'].shape[1:]} like x_train's, "
                             f"got {x['x_val'].shape[1:]}")  # fmt: skip
        classes, codes = np.unique(np.concatenate([y["y_train"], y["y_val"]]), return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y_train, y_val: expected at least 2 classes, got {classes.tolist()}")
        missing = sorted(set(classes.tolist()) - set(np.unique(y["y_train"]).tolist()))
        if missing:
            raise ValueError(f"y_train: expected every class of y_val, got none of {missing}")
        n_train = len(y["y_train"])
        return cls(
            x["x_train"].astype(np.float32),
            codes[:n_train].astype(np.int64),
            x["x_val"].astype(np.float32),
            codes[n_train:].astype(np.int64),
        )


def load_dataset(spec: StudySpec) -> Dataset:
    """Load the spec's data source, split it (stratified, seeded), scale it on the train split.

    ``mnist1d`` keeps its own 1000-example test set (as its paper does; ``test_fraction`` does not
    apply) and takes ``validation_fraction`` of its 4000 training examples.
    """
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.utils.class_weight import compute_class_weight

    data = spec.data
    if data.source == "mnist1d":
        x_rest, y_rest, x_test, y_test = _mnist1d()
        x, y = np.concatenate([x_rest, x_test]), np.concatenate([y_rest, y_test])
    else:
        x, y = _read_source(spec)
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise SpecError(
            spec.path, "data.source", data.source, f"labels of at least 2 classes, found {classes.tolist()}"
        )
    if data.source == "mnist1d":
        y_rest, y_test = y[: len(x_rest)], y[len(x_rest) :]
        validation = data.validation_fraction
    else:
        x_rest, x_test, y_rest, y_test = _split(spec, x, y, "test_fraction", data.test_fraction)
        validation = data.validation_fraction / (1 - data.test_fraction)
    x_train, x_val, y_train, y_val = _split(spec, x_rest, y_rest, "validation_fraction", validation)
    encoding = None
    if not isinstance(x_train, np.ndarray):  # a table: its columns encoded as fitted on the train split
        from tradeoff_search.data._encoding import TableEncoding

        encoding = TableEncoding.fit(x_train, impute=data.missing == "impute", max_categories=data.max_categories)
        x_train, x_val, x_test = (encoding.transform(a) for a in (x_train, x_val, x_test))
    shape = data.input_shape or x_train.shape[1:]  # of one example; scaling flattens them
    features = math.prod(x_train.shape[1:])
    if data.input_shape is not None and math.prod(data.input_shape) != features:  # exact: no int64 wrap
        raise SpecError(spec.path, "data.input_shape", list(data.input_shape), f"a shape of {features} features")
    scale = (np.ones(features), np.zeros(features))  # each feature's x * multiply + add
    if data.scaling != "none":
        scaler = StandardScaler() if data.scaling == "standard" else MinMaxScaler()
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, once
            scaler.fit(x_train.reshape(len(x_train), -1))
            x_train, x_val, x_test = (scaler.transform(a.reshape(len(a), -1)) for a in (x_train, x_val, x_test))
        if not all(np.isfinite(a).all() for a in (x_train, x_val, x_test)):
            overflow = f"features it can scale without overflow ({data.source} has values near the float64 limit)"
            raise SpecError(spec.path, "data.scaling", data.scaling, overflow)
        if isinstance(scaler, StandardScaler):
            scale = (1 / scaler.scale_, -scaler.mean_ / scaler.scale_)
        else:
            scale = (scaler.scale_, scaler.min_)
    class_weight = None
    if data.class_weight == "balanced":
        present = np.unique(y_train)
        class_weight = dict(
            zip(present.tolist(), compute_class_weight("balanced", classes=present, y=y_train).tolist(), strict=True)
        )
    preprocessing = None if encoding is None else encoding.to_dict(*scale, tuple(shape), classes.tolist())

    def shaped(a: np.ndarray) -> np.ndarray:
        return a.reshape(len(a), *shape).astype(np.float32)

    dataset = Dataset(
        shaped(x_train), y_train, shaped(x_val), y_val, shaped(x_test), y_test, class_weight, data.source, preprocessing
    )
    _logger.info("%s", dataset.summary)
    return dataset


def _split(
    spec: StudySpec, x: np.ndarray, y: np.ndarray, key: str, fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded: ``fraction`` of the rows held out. The error names the fraction when
    every class could be split but the fraction holds out fewer rows than there are classes, else
    the source (too few rows)."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=fraction, stratify=y, random_state=spec.data.split_seed)
    except ValueError as error:
        counts = np.unique(y, return_counts=True)[1]
        n_classes = len(counts)
        if counts.min() >= 2 and math.ceil(fraction * len(y)) < n_classes:
            raise SpecError(spec.path, f"data.{key}", getattr(spec.data, key),
                            f"a fraction holding out at least one row of each of the {n_classes} classes "
                            f"({len(y)} rows to split)") from None  # fmt: skip
        raise SpecError(
            spec.path, "data.source", spec.data.source, f"enough rows of every class for the splits ({error})"
        ) from None


def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus 2020), generated here by its package with its defaults: 4000 train and
    1000 test signals of 40 samples, 10 classes. Never its download path."""
    from mnist1d.data import get_dataset_args, make_dataset

    generated = make_dataset(get_dataset_args())
    return generated["x"], generated["y"], generated["x_test"], generated["y_test"]


def _read_source(spec: StudySpec) -> tuple[np.ndarray | pd.DataFrame, np.ndarray]:
    kind, location = spec.data.kind, spec.data.location
    if kind == "sklearn":
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, f"load_{location}")(return_X_y=True)
        return np.asarray(x, dtype=np.float64), np.asarray(y)
    if kind == "csv":
        return _read_csv(spec)
    if kind == "images":
        from tradeoff_search.data._images import read_images

        return read_images(spec)
    return _read_npz(spec)


def _read_csv(spec: StudySpec) -> tuple[pd.DataFrame, np.ndarray]:
    """The feature columns as read (text columns are encoded once the rows are split) and the labels."""
    import pandas as pd

    from tradeoff_search.data._encoding import text_columns

    path, target = spec.data_path, spec.data.target
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise SpecError(
            spec.path, "data.source", spec.data.source, f"a readable CSV file ({excerpt(str(error), 120)})"
        ) from None
    if target not in frame.columns:
        # The header is a line of the user's file: name a few of its columns, cut short.
        shown = [excerpt(c, 30) for c in frame.columns[:8]] + (["…"] if len(frame.columns) > 8 else [])
        raise SpecError(spec.path, "data.target", target, f"a column of {path.name} ({', '.join(shown)})")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise SpecError(spec.path, "data.source", spec.data.source, "at least one feature column besides the target")
    if spec.data.missing == "error":
        for column in features.columns:
            empty = int(features[column].isna().sum())
            if empty:
                raise SpecError(spec.path, "data.missing", "error", f'no missing values, or missing = "impute" '
                                f"(column {excerpt(column)!r} of {path.name} is empty in {empty} rows)")  # fmt: skip
    numeric = features.drop(columns=text_columns(features))
    for column in numeric.columns:
        if not np.isfinite(numeric[column].dropna().to_numpy(dtype=np.float64)).all():
            raise SpecError(
                spec.path, "data.source", spec.data.source, f"finite values (column {excerpt(column)!r} has inf)"
            )
    if frame[target].isna().any():
        raise SpecError(spec.path, "data.target", target, "a column without missing labels")
    return features, frame[target].to_numpy()


def _read_npz(spec: StudySpec) -> tuple[np.ndarray, np.ndarray]:
    import zipfile

    source = spec.data.source
    if not zipfile.is_zipfile(spec.data_path):
        raise SpecError(spec.path, "data.source", source, "a NumPy .npz archive (this file is not one)")
    try:
        with np.load(spec.data_path, allow_pickle=False) as archive:
            names = archive.files
            arrays = {name: archive[name] for name in ("x", "y") if name in names}
    # Object arrays are refused (loading them would unpickle); a damaged member fails its CRC; a
    # header may claim more memory than there is.
    except (OSError, ValueError, zipfile.BadZipFile, MemoryError) as error:
        raise SpecError(spec.path, "data.source", source, f"an .npz of plain arrays ({error})") from None
    if len(arrays) != 2:
        raise SpecError(spec.path, "data.source", source, f"an .npz with arrays 'x' and 'y' (found {names})")
    x, y = arrays["x"], arrays["y"]
    problem = None
    if not all(isinstance(a, np.ndarray) for a in (x, y)):  # a member that is not a .npy file
        problem = "'x' and 'y' saved by numpy.savez"
    elif x.ndim < 2 or 0 in x.shape[1:]:
        problem = f"'x' of shape (rows, features...), found {x.shape}"
    elif y.ndim != 1:
        problem = f"'y' of one label per row, shape (rows,), found {y.shape}"
    elif not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x) or not np.all(np.isfinite(x)):
        problem = "finite real numeric features in 'x'"
    elif y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        problem = "labels in 'y' without NaN"
    elif len(x) != len(y):
        problem = f"as many labels as rows ({len(y)} vs {len(x)})"
    if problem is not None:
        raise SpecError(spec.path, "data.source", source, problem)
    return x.astype(np.float64), y
