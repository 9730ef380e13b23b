"""Study specs: a TOML file turned into a validated, frozen :class:`StudySpec`.

Validation is declarative (in the spirit of scikit-learn's ``_param_validation``): every field
of every section names the rule that parses it, and every rule failure becomes a
:class:`SpecError` that names the file, the key, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tradeoff_search.spec._builder_source import BuilderSource

from tradeoff_search.record._keys import LATENCY_METRIC, MACS, MODEL_BYTES, PARAMS_METRIC

DEFAULT_REFERENCE_LATENCY_MS = 100.0
TOKEN_ENV = "TRADEOFF_SEARCH_DEVICE_TOKEN"  # a latency server's token: from the environment only

__all__ = [
    "Categorical",
    "FloatRange",
    "IntRange",
    "SpecError",
    "StudySpec",
]


class SpecError(ValueError):
    """A user input is invalid: says where (file or flag), which key, the value and what fits.

    The CLI prints ``str(error)`` as one line and exits with code 2.
    """

    def __init__(self, source: str | Path, key: str, value: Any, expected: str) -> None:
        self.source = str(source)
        self.key = key
        self.value = value
        self.expected = " ".join(expected.split())  # one line, whatever a library's message holds
        super().__init__(f"{self.source}: {key} = {_show(value)}: expected {self.expected}")


def _show(value: Any) -> str:
    try:
        shown = json.dumps(value)  # control characters escaped
    except (TypeError, ValueError):
        shown = repr(value)
    return excerpt(shown, 200)


def excerpt(text: str, limit: int = 40) -> str:
    """At most ``limit`` characters of ``text`` (e.g. read from a user's file) for a message:
    one line, control characters shown as ``?``, the cut marked with ``…``."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A study's name names folders (mlruns/staging/NAME, mlruns/selected/NAME), MLflow records and a
# registered model (no "/" or ":"), and is a literal in MLflow's search filters (one kind of
# quote at most, no trailing backslash).
_STUDY_NAME = re.compile(r"(?!\.\.?$)(?!\s)[^\x00-\x1f\x7f/:\"]{1,100}(?<![\s\\])")


# --------------------------------------------------------------------------- search-space values
@dataclass(frozen=True)
class IntRange:
    """An integer hyperparameter searched in ``[low, high]`` (a fixed value when equal)."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """A float hyperparameter searched in ``[low, high]`` (a fixed value when equal)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Categorical:
    """A hyperparameter chosen among ``choices``."""

    choices: tuple[Any, ...]


# --------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class _Interval:
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return not (self.high is not None and (x >= self.high if self.high_open else x > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"> {self.low}" if self.low_open else f">= {self.low}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low}, {self.high}{right}"


_ANY = _Interval()
_POSITIVE = _Interval(0, low_open=True)
_AT_LEAST_ONE = _Interval(1)
_FRACTION = _Interval(0, 1, low_open=True, high_open=True)
# NumPy seeds stop at 2**32 - 1 and trial t uses seed + t: leave room for 2**31 trials.
_SEED = _Interval(0, 2**31 - 1)
# Upper bounds of size knobs: far beyond models one times at batch 1 on a CPU, low enough that a
# typo cannot ask for terabytes (the space's largest model is also checked as a whole, below).
_LAYERS = _Interval(1, 64)  # mlp layers
_BLOCKS = _Interval(1, 16)  # cnn blocks (each may halve the signal)
_RNN_LAYERS = _Interval(1, 8)
_WIDTH = _Interval(1, 65536)  # mlp units
_CHANNELS = _Interval(1, 4096)  # cnn filters, gru units
_KERNEL = _Interval(1, 64)
_TRAIN_BATCH = _Interval(1, 65536)
_TIMED_BATCH = _Interval(1, 4096)  # latency batch sizes
_SECONDS = _Interval(0, 3600, low_open=True)  # per latency measurement: an hour at most
_CONVERSION_SECONDS = _Interval(1, 86400)  # a second to a day: the pool checks it once a second
# The largest model of a space, trained with Adam: weights, gradients and two moments (16 bytes
# per parameter) and the activations of a batch, kept for the backward pass.
MEMORY_LIMIT_BYTES = 4 * 2**30


def _is_number(x: Any, kind: type) -> bool:
    if isinstance(x, bool):
        return False
    if kind is int:
        return isinstance(x, int)
    return isinstance(x, int | float) and math.isfinite(x)


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]


@dataclass(frozen=True)
class _Scalar:
    kind: type
    bounds: _Interval = _ANY
    choices: tuple[Any, ...] | None = None

    def parse(self, value: Any, source: Path, key: str) -> Any:
        if self.choices is not None:
            if value not in self.choices or isinstance(value, bool) != (self.kind is bool):
                raise SpecError(source, key, value, f"one of {_show(list(self.choices))}")
            return value
        ok = _is_number(value, self.kind) if self.kind in (int, float) else isinstance(value, self.kind)
        if not ok:
            raise SpecError(source, key, value, _type_name(self.kind))
        if self.kind in (int, float) and value not in self.bounds:
            raise SpecError(source, key, value, f"{_type_name(self.kind)} {self.bounds}")
        return float(value) if self.kind is float else value


@dataclass(frozen=True)
class _Range:
    """A fixed number or ``[low, high]``; log ranges need a positive low."""

    kind: type
    bounds: _Interval = _ANY
    log: bool = False

    def parse(self, value: Any, source: Path, key: str) -> IntRange | FloatRange:
        what = f"{_type_name(self.kind)} or [low, high] of them, {self.bounds}"
        pair = list(value) if isinstance(value, list) else [value, value]
        if len(pair) != 2 or not all(_is_number(x, self.kind) for x in pair):
            raise SpecError(source, key, value, what)
        low, high = pair
        if low not in self.bounds or high not in self.bounds:
            raise SpecError(source, key, value, what)
        if low > high:
            raise SpecError(source, key, value, "[low, high] with low <= high")
        if self.kind is int:
            return IntRange(low, high, self.log)
        return FloatRange(float(low), float(high), self.log)


@dataclass(frozen=True)
class _Choice:
    """One value or a non-empty list of distinct values, each one of ``allowed``."""

    kind: type
    allowed: tuple[Any, ...] | None = None
    bounds: _Interval = _ANY
    may_be_empty: bool = False

    def parse(self, value: Any, source: Path, key: str) -> Categorical:
        items = value if isinstance(value, list) else [value]
        item = _Scalar(self.kind, self.bounds, self.allowed)
        what = f"a list of {_show(list(self.allowed)) if self.allowed else _type_name(self.kind)}"
        if (not items and not self.may_be_empty) or len(set(map(_show, items))) != len(items):
            empty = "" if self.may_be_empty else "non-empty and "
            raise SpecError(source, key, value, f"{what}, {empty}without repeats")
        for x in items:
            try:
                item.parse(x, source, key)
            except SpecError as error:
                raise SpecError(source, key, value, f"{what}; {_show(x)} is not {error.expected}") from None
        return Categorical(tuple(float(x) if self.kind is float else x for x in items))


@dataclass(frozen=True)
class _Shape:
    """A non-empty list of positive integers."""

    def parse(self, value: Any, source: Path, key: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not value or not all(_is_number(x, int) and x >= 1 for x in value):
            raise SpecError(source, key, value, "a list of positive integers, e.g. [40, 1]")
        return tuple(value)


@dataclass(frozen=True)
class _Builders:
    """A table of family names (not a built-in's) to builder targets, ``module:function`` or
    ``file.py:function``."""

    def parse(self, value: Any, source: Path, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise SpecError(source, key, value, 'a table of names to builders, e.g. mine = "models.py:build"')
        for name, target in value.items():
            if name in FAMILIES or not name.isidentifier():
                raise SpecError(source, f"{key}.{name}", target, f"a name of your own (not {', '.join(FAMILIES)})")
            _Scalar(str).parse(target, source, f"{key}.{name}")
        return tuple(value.items())


@dataclass(frozen=True)
class _Point:
    """A non-empty list of numbers, e.g. a reference point (its length is checked by the spec)."""

    def parse(self, value: Any, source: Path, key: str) -> tuple[float, ...]:
        if not isinstance(value, list) or not value or not all(_is_number(x, float) for x in value):
            raise SpecError(source, key, value, "a list of numbers")
        return tuple(float(x) for x in value)


@dataclass(frozen=True)
class _Device:
    """``"local"`` or the ``http://HOST:PORT`` of a latency server (``device serve``)."""

    def parse(self, value: Any, source: Path, key: str) -> str:
        if value == "local":
            return value
        try:
            return check_device_url(value) if isinstance(value, str) else check_device_url("")
        except ValueError as error:
            shown = re.sub(r"//[^/@]*@", "//***@", value) if isinstance(value, str) else value  # no credentials
            raise SpecError(source, key, shown, str(error).removeprefix("expected ")) from None


def check_device_url(url: str) -> str:
    """``url`` if it is ``http(s)://HOST:PORT`` (nothing else: no path, query or credentials);
    else ``ValueError`` saying what is expected."""
    expected = "expected 'local' or 'http://HOST:PORT' of a latency server (python -m tradeoff_search device serve)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ValueError(expected)
    if parts.username or parts.password:
        raise ValueError(f"{expected}; a token goes in {TOKEN_ENV}, not in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(expected)
    return url.rstrip("/")


def _rule(rule: Any, default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"rule": rule})


# --------------------------------------------------------------------------- sections
DATASETS = ("digits", "breast_cancer", "wine", "iris")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
ACTIVATIONS = ("relu", "gelu", "tanh", "elu", "selu", "swish", "sigmoid")
SAMPLERS = ("tpe", "nsga2", "random", "gp")
FAMILIES = ("mlp", "cnn1d", "cnn2d", "gru")
# Inputs each family takes, besides the batch: cnn1d and gru (steps, channels), cnn2d (h, w, c).
FAMILY_RANKS = {"cnn1d": 2, "gru": 2, "cnn2d": 3}
COMPANIONS = (PARAMS_METRIC, MACS, MODEL_BYTES)  # deterministic, measured without timing
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")  # LiteRT post-training quantization, see _convert


@dataclass(frozen=True)
class StudySection:
    """``[study]``: how the search runs."""

    name: str = _rule(_Scalar(str), "")
    n_trials: int = _rule(_Scalar(int, _AT_LEAST_ONE), 30)
    timeout: float | None = _rule(_Scalar(float, _POSITIVE), None)
    sampler: str = _rule(_Scalar(str, choices=SAMPLERS), "tpe")
    seed: int = _rule(_Scalar(int, _SEED), 0)
    # A worker silent for twice this long is taken as crashed: its trial fails and is re-queued.
    heartbeat_seconds: int = _rule(_Scalar(int, _Interval(1, 86400)), 30)  # at most a day
    # A worker process whose resident memory has grown by this much since its first trial is
    # replaced by a fresh one (see tradeoff_search.study._workers.Retirement for the measured default).
    worker_growth_mb: float = _rule(_Scalar(float, _POSITIVE), 1024.0)


@dataclass(frozen=True)
class DataSection:
    """``[data]``: where the examples come from and how they are split."""

    source: str = _rule(_Scalar(str))
    target: str | None = _rule(_Scalar(str), None)
    validation_fraction: float = _rule(_Scalar(float, _FRACTION), 0.2)
    test_fraction: float = _rule(_Scalar(float, _FRACTION), 0.2)
    split_seed: int = _rule(_Scalar(int, _SEED), 0)
    # Each example's shape, e.g. [40, 1] for a signal or [8, 8, 1] for an image (default: flat)
    input_shape: tuple[int, ...] | None = _rule(_Shape(), None)
    scaling: str = _rule(_Scalar(str, choices=("standard", "minmax", "none")), "standard")
    class_weight: str = _rule(_Scalar(str, choices=("none", "balanced")), "none")
    # csv: a missing value is refused ("error") or filled from the train split ("impute")
    missing: str = _rule(_Scalar(str, choices=("error", "impute")), "error")
    # csv: indicators per text column: the most frequent categories and one "other"
    max_categories: int = _rule(_Scalar(int, _Interval(2, 1000)), 16)
    # images: [height, width] to resize every image to (default: their own size, which must be one)
    image_size: tuple[int, ...] | None = _rule(_Shape(), None)
    color_mode: str = _rule(_Scalar(str, choices=("grayscale", "rgb", "rgba")), "rgb")  # images

    @property
    def kind(self) -> str:
        return self.source.partition(":")[0]

    @property
    def location(self) -> str:
        return self.source.partition(":")[2]


@dataclass(frozen=True)
class ObjectivesSection:
    """``[objectives]``: accuracy is maximized, latency minimized, and any ``extra`` minimized too."""

    accuracy: str = _rule(_Scalar(str, choices=("accuracy", "balanced_accuracy")), "accuracy")
    extra: Categorical = _rule(_Choice(str, COMPANIONS, may_be_empty=True), Categorical(()))


@dataclass(frozen=True)
class LatencySection:
    """``[latency]``: how inference latency is measured."""

    runtime: str = _rule(_Scalar(str, choices=("litert", "tf")), "litert")
    batch_size: Categorical = _rule(_Choice(int, bounds=_TIMED_BATCH), Categorical((1,)))
    threads: int = _rule(_Scalar(int, _Interval(1, 1024)), 1)
    statistic: str = _rule(_Scalar(str, choices=("p10", "median")), "p10")
    max_seconds: float = _rule(_Scalar(float, _SECONDS), 1.0)
    budget_ms: float | None = _rule(_Scalar(float, _POSITIVE), None)
    # a string fixes the mode, a list searches it (the trial parameter ``quantization``)
    quantization: Categorical = _rule(_Choice(str, QUANTIZATIONS), Categorical(("none",)))
    representative_rows: int = _rule(_Scalar(int, _AT_LEAST_ONE), 200)  # int8's calibration sample
    # a worker process whose conversion to LiteRT takes longer is ended (see _pool_channel)
    conversion_timeout: float = _rule(_Scalar(float, _CONVERSION_SECONDS), 600.0)
    io: str = _rule(_Scalar(str, choices=("float", "int8")), "float")  # int8 models' input and output
    # where candidates are timed: this machine, or a latency server on the target device
    device: str = _rule(_Device(), "local")

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Every batch size to time, from ``batch_size = 1`` or ``batch_size = [1, 32]``. The first
        is the objective's (``latency_ms``, the budget); the others are recorded per trial as
        ``latency_ms_batch{N}``."""
        return self.batch_size.choices


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: the architecture space. ``families`` is searched too; each family's knobs are
    suggested only for trials of that family (mlp: n_layers, units; cnn1d/cnn2d: conv_blocks,
    filters, kernel_size, downsample, residual; gru: gru_layers, gru_units).

    Your own builders: ``builder = "models.py:build"`` searches that one alone (its family is
    named after the function); ``[model.builders]`` names several (``mine = "models.py:build"``),
    to list in ``families`` beside the built-in ones. See ``tradeoff_search.space._builders``."""

    families: Categorical = _rule(_Choice(str), Categorical(("mlp",)))
    builder: str | None = _rule(_Scalar(str), None)
    builders: tuple[tuple[str, str], ...] = _rule(_Builders(), ())
    n_layers: IntRange = _rule(_Range(int, _LAYERS), IntRange(1, 3))
    units: IntRange = _rule(_Range(int, _WIDTH, log=True), IntRange(16, 512, log=True))
    conv_blocks: IntRange = _rule(_Range(int, _BLOCKS), IntRange(1, 3))
    filters: IntRange = _rule(_Range(int, _CHANNELS, log=True), IntRange(8, 64, log=True))
    kernel_size: Categorical = _rule(_Choice(int, bounds=_KERNEL), Categorical((3, 5)))
    downsample: Categorical = _rule(_Choice(str, ("max", "stride", "none")), Categorical(("max", "stride", "none")))
    residual: Categorical = _rule(_Choice(bool), Categorical((False, True)))
    gru_layers: IntRange = _rule(_Range(int, _RNN_LAYERS), IntRange(1, 2))
    gru_units: IntRange = _rule(_Range(int, _CHANNELS, log=True), IntRange(8, 64, log=True))
    activation: Categorical = _rule(_Choice(str, ACTIVATIONS), Categorical(("relu", "gelu", "tanh")))
    dropout: FloatRange = _rule(_Range(float, _Interval(0, 1, high_open=True)), FloatRange(0.0, 0.3))
    batch_norm: Categorical = _rule(_Choice(bool), Categorical((False,)))


@dataclass(frozen=True)
class OptimizerSection:
    """``[optimizer]``: the optimizer space; conditional knobs apply only where they mean something."""

    name: Categorical = _rule(_Choice(str, OPTIMIZERS), Categorical(OPTIMIZERS))
    learning_rate: FloatRange = _rule(_Range(float, _POSITIVE, log=True), FloatRange(1e-4, 3e-2, log=True))
    schedule: Categorical = _rule(
        _Choice(str, ("constant", "cosine", "exponential")), Categorical(("constant", "cosine", "exponential"))
    )
    weight_decay: FloatRange = _rule(_Range(float, _POSITIVE, log=True), FloatRange(1e-6, 1e-2, log=True))
    momentum: FloatRange = _rule(_Range(float, _Interval(0, 1, high_open=True)), FloatRange(0.0, 0.95))
    nesterov: Categorical = _rule(_Choice(bool), Categorical((False, True)))


@dataclass(frozen=True)
class TrainingSection:
    """``[training]``: batch size (searched), the epoch budget (fixed) and multi-objective early
    stopping (``pruning``: see ``tradeoff_search.trial._pruning``)."""

    batch_size: Categorical = _rule(_Choice(int, bounds=_TRAIN_BATCH), Categorical((32, 64, 128)))
    max_epochs: int = _rule(_Scalar(int, _AT_LEAST_ONE), 30)
    patience: int = _rule(_Scalar(int, _AT_LEAST_ONE), 5)
    pruning: bool = _rule(_Scalar(bool), False)
    pruning_margin: float = _rule(_Scalar(float, _Interval(0, 1, high_open=True)), 0.02)


@dataclass(frozen=True)
class TrackingSection:
    """``[tracking]``: the MLflow record."""

    experiment: str = _rule(_Scalar(str), "")
    log_models: str = _rule(_Scalar(str, choices=("pareto", "all", "none")), "pareto")
    # one number per objective: [accuracy, latency_ms, *extra]; default [0, budget_ms or 100]
    hypervolume_reference: tuple[float, ...] | None = _rule(_Point(), None)


_SECTIONS: dict[str, type] = {
    "study": StudySection,
    "data": DataSection,
    "objectives": ObjectivesSection,
    "latency": LatencySection,
    "model": ModelSection,
    "optimizer": OptimizerSection,
    "training": TrainingSection,
    "tracking": TrackingSection,
}


def _parse_section(cls: type, table: Any, source: Path, section: str) -> Any:
    if not isinstance(table, dict):
        raise SpecError(source, section, table, "a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in table.items():
        if key not in fields:
            raise SpecError(source, f"{section}.{key}", value, f"one of the keys {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{section}.{name}"
        if name in table:
            kwargs[name] = f.metadata["rule"].parse(table[name], source, key)
        elif f.default is dataclasses.MISSING:
            raise SpecError(source, key, None, "a value (this key is required)")
    return cls(**kwargs)


@dataclass(frozen=True)
class StudySpec:
    """A validated, immutable study specification.

    Load one with :meth:`StudySpec.load` (a TOML file) or :meth:`StudySpec.from_dict`; every
    invalid input raises :class:`SpecError` naming the file, the key and the value.

    Example:
        >>> spec = StudySpec.load("studies/digits.toml")  # doctest: +SKIP
        >>> spec.study.n_trials  # doctest: +SKIP
        30
    """

    path: Path
    study: StudySection
    data: DataSection
    objectives: ObjectivesSection = ObjectivesSection()
    latency: LatencySection = LatencySection()
    model: ModelSection = ModelSection()
    optimizer: OptimizerSection = OptimizerSection()
    training: TrainingSection = TrainingSection()
    tracking: TrackingSection = TrackingSection()
    digest: str = ""

    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise SpecError(path, "(file)", str(path), f"a readable TOML file ({error.strerror})") from None
        try:
            document = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise SpecError(path, "(file)", str(path), f"valid TOML ({error})") from None
        return cls.from_dict(document, path=path, digest=hashlib.sha256(raw).hexdigest()[:16])

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], path: str | Path = "<dict>", digest: str = "") -> StudySpec:
        path = Path(path)
        for section, table in document.items():
            if section not in _SECTIONS:
                raise SpecError(path, section, table, f"one of the sections {sorted(_SECTIONS)}")
        if "data" not in document:
            raise SpecError(path, "data", None, "a [data] table (this section is required)")
        parsed = {name: _parse_section(kind, document.get(name, {}), path, name) for name, kind in _SECTIONS.items()}
        if not parsed["study"].name:
            parsed["study"] = dataclasses.replace(parsed["study"], name=path.stem)
        if not parsed["tracking"].experiment:
            parsed["tracking"] = dataclasses.replace(parsed["tracking"], experiment=parsed["study"].name)
        if not digest:
            digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
        parsed["model"] = _with_builder(parsed["model"], document.get("model", {}), path)
        spec = cls(path=path, digest=digest, **parsed)
        spec._check_data()
        spec._check_builders()
        return spec

    def _check_builders(self) -> None:
        """Every family is built in or named in ``[model.builders]``; every builder's module or
        file exists (it is imported only when a study runs: see ``tradeoff_search.spec._builder_source``)."""
        model, named = self.model, dict(self.model.builders)
        for family in model.families.choices:
            if family not in FAMILIES and family not in named:
                expected = f"families among {_show(list(FAMILIES))} or the names of [model.builders]"
                raise SpecError(self.path, "model.families", list(model.families.choices),
                                f"{expected} ({_show(family)} is neither)")  # fmt: skip
        self.builder_sources  # noqa: B018 - resolving them is the check

    @functools.cached_property
    def builder_sources(self) -> dict[str, BuilderSource]:
        """Each user builder of ``[model]`` by family name: its source file and that file's hash,
        as they were when the spec was loaded."""
        from tradeoff_search.spec._builder_source import resolve

        sources = {}
        for name, target in self.model.builders:
            try:
                sources[name] = resolve(name, target, self.path.parent)
            except ValueError as error:
                raise SpecError(self.path, self.builder_key(name), target, str(error)) from None
        return sources

    def builder_key(self, name: str) -> str:
        """The spec key naming the builder of family ``name``: ``model.builder`` or ``model.builders.NAME``."""
        builder = self.model.builder
        return (
            "model.builder" if builder is not None and builder.rpartition(":")[2] == name else f"model.builders.{name}"
        )

    def _check_data(self) -> None:
        if not _STUDY_NAME.fullmatch(self.study.name):
            raise SpecError(self.path, "study.name", self.study.name, "a name of 1 to 100 characters without "
                            '/, :, " or control characters, not . or .., no space or \\ at either end')  # fmt: skip
        if self.study.sampler == "gp" and importlib.util.find_spec("torch") is None:
            needs = "tpe, nsga2 or random (gp needs PyTorch: pip install 'tradeoff_search[gp]')"
            raise SpecError(self.path, "study.sampler", "gp", needs)
        reference = self.tracking.hypervolume_reference
        if reference is not None and len(reference) != len(self.metric_names):
            raise SpecError(
                self.path,
                "tracking.hypervolume_reference",
                list(reference),
                f"one number for each of {self.metric_names}",
            )
        latency = self.latency
        quantized = latency.quantization.choices != ("none",)
        if latency.runtime == "tf" and quantized:
            raise SpecError(self.path, "latency.quantization", list(latency.quantization.choices),
                            '"none" with runtime = "tf" (quantization is LiteRT\'s: runtime = "litert")')  # fmt: skip
        if latency.io == "int8" and "int8" not in latency.quantization.choices:
            raise SpecError(self.path, "latency.io", latency.io, '"float" unless quantization includes "int8"')
        if self.latency.device != "local" and self.latency.runtime != "litert":
            expected = f"'litert' (a latency server times .tflite files; latency.device = '{self.latency.device}')"
            raise SpecError(self.path, "latency.runtime", self.latency.runtime, expected)
        data = self.data
        if data.validation_fraction + data.test_fraction >= 1:
            raise SpecError(
                self.path,
                "data.validation_fraction",
                data.validation_fraction,
                f"validation_fraction + test_fraction < 1 (test_fraction = {data.test_fraction})",
            )
        if not ((data.kind in ("sklearn", "csv", "npz", "images") and data.location) or data.source == "mnist1d"):
            raise SpecError(self.path, "data.source", data.source,
                            "'sklearn:NAME', 'csv:PATH', 'npz:PATH', 'images:FOLDER' or 'mnist1d'")  # fmt: skip
        # images are (height, width, channels); other sources flat unless input_shape says otherwise
        rank = len(data.input_shape) if data.input_shape else 3 if data.kind == "images" else 1
        for family in self.model.families.choices:
            if FAMILY_RANKS.get(family, rank) != rank:
                raise SpecError(
                    self.path,
                    "model.families",
                    list(self.model.families.choices),
                    f"families that take inputs of {rank} dimensions "
                    f"({family} needs data.input_shape with {FAMILY_RANKS[family]} dimensions)",
                )
        if data.kind == "sklearn" and data.location not in DATASETS:
            raise SpecError(self.path, "data.source", data.source, f"sklearn:NAME with NAME in {list(DATASETS)}")
        self._check_memory()
        if data.kind in ("csv", "npz") and not self.data_path.is_file():
            problem = "is not a file" if self.data_path.exists() else "not found"
            raise SpecError(self.path, "data.source", data.source, f"an existing file ({self.data_path} {problem})")
        if data.kind == "csv" and data.target is None:
            raise SpecError(self.path, "data.target", None, "the name of the label column (required for csv:)")
        if data.kind != "csv" and data.target is not None:
            raise SpecError(self.path, "data.target", data.target, "no target (only csv: sources take one)")
        if data.kind == "images" and not self.data_path.is_dir():
            problem = "is not a folder" if self.data_path.exists() else "not found"
            raise SpecError(self.path, "data.source", data.source, f"a folder of images ({self.data_path} {problem})")
        if data.image_size is not None and (data.kind != "images" or len(data.image_size) != 2):
            expected = "[height, width]" if data.kind == "images" else "no image_size (only images: sources take one)"
            raise SpecError(self.path, "data.image_size", list(data.image_size), expected)
        if data.kind != "images" and data.color_mode != "rgb":
            raise SpecError(self.path, "data.color_mode", data.color_mode, '"rgb" (only images: sources take one)')
        if data.kind != "csv" and data.missing != "error":
            raise SpecError(self.path, "data.missing", data.missing, '"error" (only csv: sources have missing values)')

    def _check_memory(self) -> None:
        """Refuse a space whose largest model would need more than ``MEMORY_LIMIT_BYTES`` to train."""
        model, batch = self.model, max(self.training.batch_size.choices)
        features = _FEATURES.get(self.data.source) or math.prod(self.data.input_shape or (1,))
        channels = (self.data.input_shape or (1,))[-1]
        steps = features // channels
        largest: dict[str, tuple[str, int, int]] = {}  # family: (knob, parameters, activations per example)
        if "mlp" in model.families.choices:
            units, layers = model.units.high, model.n_layers.high
            largest["mlp"] = ("model.units", features * units + (layers - 1) * units**2, layers * units)
        for family in ("cnn1d", "cnn2d"):
            if family in model.families.choices:
                filters, blocks, kernel = model.filters.high, model.conv_blocks.high, max(model.kernel_size.choices)
                taps = kernel ** (2 if family == "cnn2d" else 1)
                parameters = taps * filters * (channels + 2 * filters * blocks)  # + residual convolutions
                largest[family] = ("model.filters", parameters, 2 * blocks * steps * filters)
        if "gru" in model.families.choices:
            units, layers = model.gru_units.high, model.gru_layers.high
            largest["gru"] = (
                "model.gru_units",
                3 * layers * units * (channels + units + 2),
                4 * layers * steps * units,
            )
        for family, (key, parameters, activations) in largest.items():
            needed = 16 * parameters + 2 * 4 * batch * activations
            if needed > MEMORY_LIMIT_BYTES:
                value = getattr(model, key.partition(".")[2])
                raise SpecError(self.path, key, [value.low, value.high], f"a space whose largest model fits in memory: "
                                f"the largest {family} has ~{parameters:.3g} parameters and needs ~{_bytes(needed)} "
                                f"to train at batch {batch}, over the {_bytes(MEMORY_LIMIT_BYTES)} limit")  # fmt: skip

    @property
    def data_path(self) -> Path:
        """A ``csv:``/``npz:`` source's file or an ``images:`` folder, relative paths taken from the
        spec file's folder."""
        location = Path(self.data.location)
        return location if location.is_absolute() else self.path.parent / location

    @property
    def metric_names(self) -> list[str]:
        return [self.objectives.accuracy, LATENCY_METRIC, *self.objectives.extra.choices]

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.metric_names) - 1)

    @property
    def hypervolume_reference(self) -> list[float] | None:
        """Where hypervolume is measured from: the spec's point; else, for accuracy and latency
        alone, accuracy 0 and the latency budget or 100 ms; else none."""
        if self.tracking.hypervolume_reference is not None:
            return list(self.tracking.hypervolume_reference)
        if self.objectives.extra.choices:
            return None
        return [0.0, self.latency.budget_ms or DEFAULT_REFERENCE_LATENCY_MS]

    def override(
        self, *, n_trials: int | None = None, timeout: float | None = None, worker_growth_mb: float | None = None
    ) -> StudySpec:
        """A copy with ``[study]`` settings replaced (as the CLI flags do)."""
        changes: dict[str, Any] = {}
        if n_trials is not None:
            changes["n_trials"] = _Scalar(int, _AT_LEAST_ONE).parse(n_trials, Path("--n-trials"), "n_trials")
        if timeout is not None:
            changes["timeout"] = _Scalar(float, _POSITIVE).parse(timeout, Path("--timeout"), "timeout")
        if worker_growth_mb is not None:
            changes["worker_growth_mb"] = _Scalar(float, _POSITIVE).parse(
                worker_growth_mb, Path("--worker-growth-mb"), "worker_growth_mb"
            )
        return dataclasses.replace(self, study=dataclasses.replace(self.study, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec (defaults filled in) as plain data, for logging."""
        plain = {name: _plain(dataclasses.asdict(getattr(self, name))) for name in _SECTIONS}
        # [model.builders] holds the builder = "..." shorthand too (as families does its name).
        plain["model"] = {k: v for k, v in plain["model"].items() if k != "builder"} | {
            "builders": dict(self.model.builders)
        }
        return plain


def _with_builder(model: ModelSection, table: Any, source: Path) -> ModelSection:
    """``builder = "file.py:build"`` as ``[model.builders] build = "file.py:build"``, and as the
    only family unless ``families`` lists it beside others."""
    if model.builder is None:
        return model
    name = model.builder.rpartition(":")[2]
    if not name.isidentifier():
        raise SpecError(source, "model.builder", model.builder, "module:function or path/to/file.py:function")
    if name in FAMILIES or name in dict(model.builders):
        raise SpecError(source, "model.builder", model.builder,
                        f"a function not named like a family already in the spec ({name}); "
                        "name it in [model.builders] instead")  # fmt: skip
    families = model.families if "families" in table else Categorical((name,))
    return dataclasses.replace(model, families=families, builders=((name, model.builder), *model.builders))


# Features of the built-in sources (csv/npz: unknown until read, so counted from input_shape or as 1).
_FEATURES = {"sklearn:digits": 64, "sklearn:breast_cancer": 30, "sklearn:wine": 13, "sklearn:iris": 4, "mnist1d": 40}


def _bytes(count: float) -> str:
    units = ["B", "KB", "MB", "GB", "TB", "PB"]
    while count >= 1024 and len(units) > 1:
        count /= 1024
        units.pop(0)
    return f"{count:.3g} {units[0]}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"choices"}:
            return _plain(value["choices"])
        if set(value) == {"low", "high", "log"}:
            return [value["low"], value["high"]]
        return {k: _plain(v) for k, v in value.items() if v is not None}  # TOML has no null
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
