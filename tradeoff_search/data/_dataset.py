"""Data sources (``sklearn:NAME``, ``csv:PATH``, ``npz:PATH``, ``images:FOLDER``, ``mnist1d``) →
split, encoded, scaled arrays."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tradeoff_search.rules import SpecError

if TYPE_CHECKING:
    from tradeoff_search.data._section import DataSection

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
    # sha256 of the file (or image folder) read; None for a built-in source or a user's arrays
    digest: str | None = None

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


class DataSpec(Protocol):
    """What :func:`load_dataset` reads of a spec (a :class:`~tradeoff_search.StudySpec` is one):
    its file, whose folder relative paths start from, and its ``[data]`` section."""

    @property
    def path(self) -> Path: ...

    @property
    def data(self) -> DataSection: ...


def load_dataset(spec: DataSpec) -> Dataset:
    """Load the spec's data source, split it (stratified, seeded), scale it on the train split.

    ``mnist1d`` keeps its own 1000-example test set (as its paper does; ``test_fraction`` does not
    apply) and takes ``validation_fraction`` of its 4000 training examples.
    """
    from sklearn.utils.class_weight import compute_class_weight

    data = spec.data
    examples = data.source_kind.read(data, spec.path)
    x, (classes, y) = examples.x, np.unique(examples.y, return_inverse=True)
    if len(classes) < 2:
        raise SpecError(
            spec.path, "data.source", data.source, f"labels of at least 2 classes, found {classes.tolist()}"
        )
    if examples.own_test:
        cut = len(y) - examples.own_test
        x_rest, x_test, y_rest, y_test = x[:cut], x[cut:], y[:cut], y[cut:]
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
    (x_train, x_val, x_test), scale = _scaled(spec, x_train, x_val, x_test)
    class_weight = None
    if data.class_weight == "balanced":
        present = np.unique(y_train)
        class_weight = dict(
            zip(present.tolist(), compute_class_weight("balanced", classes=present, y=y_train).tolist(), strict=True)
        )
    preprocessing = None if encoding is None else encoding.to_dict(*scale, tuple(shape), classes.tolist())

    def shaped(a: np.ndarray) -> np.ndarray:
        return a.reshape(len(a), *shape).astype(np.float32)

    dataset = Dataset(shaped(x_train), y_train, shaped(x_val), y_val, shaped(x_test), y_test, class_weight,
                      data.source, preprocessing, examples.digest)  # fmt: skip
    _logger.info("%s", dataset.summary)
    return dataset


def data_change(spec: DataSpec, recorded: str | None, digest: str | None) -> str | None:
    """How the data differs from what a study recorded (``recorded``: the sha256 of its file or
    image folder, see :attr:`Dataset.digest`), e.g. ``"data.csv changed: sha256 … then, … now"``;
    None if it is that data, or none was recorded."""
    if recorded is None or recorded == digest:
        return None
    now = "none" if digest is None else digest[:12]
    return f"{spec.data.located(spec.path)} changed: sha256 {recorded[:12]} then, {now} now"


def data_changed(spec: DataSpec, change: str, study_name: str) -> SpecError:
    """The error for data other than study ``study_name`` runs on (``change``: see :func:`data_change`)."""
    return SpecError(spec.path, "data.source", spec.data.source, f"the data study {study_name!r} runs on "
                     f"({change}); restore it, or resume the study with --accept-data-change")  # fmt: skip


def _scaled(spec: DataSpec, *splits: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    """The splits flattened and scaled as ``data.scaling`` says, fitted on the first (the train
    split), and each feature's scale as ``x * multiply + add``."""
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    data = spec.data
    features = math.prod(splits[0].shape[1:])
    if data.scaling == "none":
        return splits, (np.ones(features), np.zeros(features))
    scaler = StandardScaler() if data.scaling == "standard" else MinMaxScaler()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, once
        scaler.fit(splits[0].reshape(len(splits[0]), -1))
        scaled = tuple(scaler.transform(a.reshape(len(a), -1)) for a in splits)
    if not all(np.isfinite(a).all() for a in scaled):
        overflow = f"features it can scale without overflow ({data.source} has values near the float64 limit)"
        raise SpecError(spec.path, "data.scaling", data.scaling, overflow)
    if isinstance(scaler, StandardScaler):
        return scaled, (1 / scaler.scale_, -scaler.mean_ / scaler.scale_)
    return scaled, (scaler.scale_, scaler.min_)


def _split(
    spec: DataSpec, x: np.ndarray, y: np.ndarray, key: str, fraction: float
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
