"""Data sources (``sklearn:NAME``, ``csv:PATH``, ``npz:PATH``) → split, scaled arrays."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tradeoff_search._spec import SpecError, StudySpec

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

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max())) + 1

    @classmethod
    def from_arrays(cls, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> Dataset:
        """Wrap arrays a user already split; labels of any type are encoded to ``0..n_classes-1``."""
        classes, codes = np.unique(np.concatenate([np.asarray(y_train), np.asarray(y_val)]), return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"data: expected at least 2 classes in y_train/y_val, got {classes.tolist()}")
        n_train = len(y_train)
        return cls(
            np.asarray(x_train, dtype=np.float32),
            codes[:n_train].astype(np.int64),
            np.asarray(x_val, dtype=np.float32),
            codes[n_train:].astype(np.int64),
        )


def load_dataset(spec: StudySpec) -> Dataset:
    """Load the spec's data source, split it (stratified, seeded), scale it on the train split.

    ``mnist1d`` keeps its own 1000-example test set (as its paper does; ``test_fraction`` does not
    apply) and takes ``validation_fraction`` of its 4000 training examples.
    """
    from sklearn.model_selection import train_test_split
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
    features = int(np.prod(x.shape[1:]))
    if data.input_shape is not None and int(np.prod(data.input_shape)) != features:
        raise SpecError(spec.path, "data.input_shape", list(data.input_shape), f"a shape of {features} features")
    try:
        if data.source == "mnist1d":
            y_rest, y_test = y[: len(x_rest)], y[len(x_rest) :]
            validation = data.validation_fraction
        else:
            x_rest, x_test, y_rest, y_test = train_test_split(
                x, y, test_size=data.test_fraction, stratify=y, random_state=data.split_seed
            )
            validation = data.validation_fraction / (1 - data.test_fraction)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=validation, stratify=y_rest, random_state=data.split_seed
        )
    except ValueError as error:  # too few rows, or a class too small to stratify
        raise SpecError(
            spec.path, "data.source", data.source, f"enough rows of every class for the splits ({error})"
        ) from None
    if data.scaling != "none":
        scaler = StandardScaler() if data.scaling == "standard" else MinMaxScaler()
        scaler.fit(x_train.reshape(len(x_train), -1))
        x_train, x_val, x_test = (scaler.transform(a.reshape(len(a), -1)) for a in (x_train, x_val, x_test))
    class_weight = None
    if data.class_weight == "balanced":
        present = np.unique(y_train)
        class_weight = dict(
            zip(present.tolist(), compute_class_weight("balanced", classes=present, y=y_train).tolist(), strict=True)
        )
    _logger.info("data %s: %d train, %d validation, %d test rows", data.source, len(y_train), len(y_val), len(y_test))
    shape = data.input_shape or x.shape[1:]

    def shaped(a: np.ndarray) -> np.ndarray:
        return a.reshape(len(a), *shape).astype(np.float32)

    return Dataset(shaped(x_train), y_train, shaped(x_val), y_val, shaped(x_test), y_test, class_weight)


def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus 2020), generated here by its package with its defaults: 4000 train and
    1000 test signals of 40 samples, 10 classes. Never its download path."""
    from mnist1d.data import get_dataset_args, make_dataset

    generated = make_dataset(get_dataset_args())
    return generated["x"], generated["y"], generated["x_test"], generated["y_test"]


def _read_source(spec: StudySpec) -> tuple[np.ndarray, np.ndarray]:
    kind, location = spec.data.kind, spec.data.location
    if kind == "sklearn":
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, f"load_{location}")(return_X_y=True)
        return np.asarray(x, dtype=np.float64), np.asarray(y)
    if kind == "csv":
        return _read_csv(spec)
    return _read_npz(spec)


def _read_csv(spec: StudySpec) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    path, target = spec.data_path, spec.data.target
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise SpecError(spec.path, "data.source", spec.data.source, f"a readable CSV file ({error})") from None
    if target not in frame.columns:
        raise SpecError(
            spec.path, "data.target", target, f"a column of {path.name} ({', '.join(map(str, frame.columns))})"
        )
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise SpecError(spec.path, "data.source", spec.data.source, "at least one feature column besides the target")
    for column in features.columns:
        if not pd.api.types.is_numeric_dtype(features[column]) or pd.api.types.is_bool_dtype(features[column]):
            raise SpecError(
                spec.path, "data.source", spec.data.source, f"numeric feature columns (column {column!r} holds text)"
            )
        if features[column].isna().any():
            raise SpecError(
                spec.path, "data.source", spec.data.source, f"no missing values (column {column!r} has some)"
            )
    if frame[target].isna().any():
        raise SpecError(spec.path, "data.target", target, "a column without missing labels")
    return features.to_numpy(dtype=np.float64), frame[target].to_numpy()


def _read_npz(spec: StudySpec) -> tuple[np.ndarray, np.ndarray]:
    import zipfile

    source = spec.data.source
    if not zipfile.is_zipfile(spec.data_path):
        raise SpecError(spec.path, "data.source", source, "a NumPy .npz archive (this file is not one)")
    try:
        with np.load(spec.data_path, allow_pickle=False) as archive:
            names = archive.files
            arrays = {name: archive[name] for name in ("x", "y") if name in names}
    except (OSError, ValueError) as error:  # object arrays are refused: loading them would unpickle
        raise SpecError(spec.path, "data.source", source, f"an .npz of plain arrays ({error})") from None
    if len(arrays) != 2:
        raise SpecError(spec.path, "data.source", source, f"an .npz with arrays 'x' and 'y' (found {names})")
    x, y = arrays["x"], arrays["y"]
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise SpecError(spec.path, "data.source", source, "finite numeric features in 'x'")
    if len(x) != len(y):
        raise SpecError(spec.path, "data.source", source, f"as many labels as rows ({len(y)} vs {len(x)})")
    return x.astype(np.float64), y
