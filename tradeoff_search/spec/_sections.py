"""The sections of a study spec besides ``[data]`` (see ``tradeoff_search.data``): each field
names the rule that parses its key, and a section checks its keys together in ``check``."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from tradeoff_search.record._keys import MACS, MODEL_BYTES, PARAMS_METRIC, RAM_BYTES
from tradeoff_search.rules import (
    AT_LEAST_ONE,
    POSITIVE,
    SEED,
    Builders,
    Categorical,
    Choice,
    Device,
    FloatRange,
    Interval,
    IntRange,
    Point,
    Range,
    Scalar,
    Section,
    SpecError,
    setting,
)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
ACTIVATIONS = ("relu", "gelu", "tanh", "elu", "selu", "swish", "sigmoid")
SAMPLERS = ("tpe", "nsga2", "random", "gp")
FAMILIES = ("mlp", "cnn1d", "cnn2d", "gru")
# Inputs each family takes, besides the batch: cnn1d and gru (steps, channels), cnn2d (h, w, c).
FAMILY_RANKS = {"cnn1d": 2, "gru": 2, "cnn2d": 3}
COMPANIONS = (PARAMS_METRIC, MACS, MODEL_BYTES, RAM_BYTES)  # deterministic, measured without timing
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")  # LiteRT post-training quantization, see _convert
MICRO_PACKAGE = "tflite_micro"  # the micro runtime, which measures RAM (the [micro] extra)
KB = 1024  # the budgets' kB: bytes as microcontroller datasheets count RAM and flash

# Upper bounds of size knobs: far beyond models one times at batch 1 on a CPU, low enough that a
# typo cannot ask for terabytes (the space's largest model is also checked as a whole, see _memory).
_LAYERS = Interval(1, 64)  # mlp layers
_BLOCKS = Interval(1, 16)  # cnn blocks (each may halve the signal)
_RNN_LAYERS = Interval(1, 8)
_WIDTH = Interval(1, 65536)  # mlp units
_CHANNELS = Interval(1, 4096)  # cnn filters, gru units
_KERNEL = Interval(1, 64)
_TRAIN_BATCH = Interval(1, 65536)
_TIMED_BATCH = Interval(1, 4096)  # latency batch sizes
_SECONDS = Interval(0, 600, low_open=True)  # per latency measurement: ten minutes, a latency server's bound too
_CONVERSION_SECONDS = Interval(1, 86400)  # a second to a day: the pool checks it once a second
_BELOW_ONE = Interval(0, 1, high_open=True)

# A study's name names folders (mlruns/staging/NAME, mlruns/selected/NAME), MLflow records and a
# registered model (no "/" or ":"), and is a literal in MLflow's search filters (one kind of
# quote at most, no trailing backslash).
_STUDY_NAME = re.compile(r"(?!\.\.?$)(?!\s)[^\x00-\x1f\x7f/:\"]{1,100}(?<![\s\\])")
# Characters that show as nothing or reorder what follows (a bidi override can make a name read
# as another in a terminal or the MLflow UI), and line breaks other than \n.
_UNSEEN = frozenset({"Cc", "Cf", "Zl", "Zp"})


@dataclass(frozen=True)
class StudySection(Section):
    """``[study]``: how the search runs."""

    name: str = setting(Scalar(str), "")
    n_trials: int = setting(Scalar(int, AT_LEAST_ONE), 30)
    timeout: float | None = setting(Scalar(float, POSITIVE), None)
    sampler: str = setting(Scalar(str, choices=SAMPLERS), "tpe")
    seed: int = setting(Scalar(int, SEED), 0)
    # A worker silent for twice this long is taken as crashed: its trial fails and is re-queued.
    heartbeat_seconds: int = setting(Scalar(int, Interval(1, 86400)), 30)  # at most a day
    # A worker process whose resident memory has grown by this much since its first trial is
    # replaced by a fresh one (see tradeoff_search.study._retirement.Retirement for the measured default).
    worker_growth_mb: float = setting(Scalar(float, POSITIVE), 1024.0)

    def check(self, spec_file: Path) -> None:
        """The name (the spec file's, unless given) can name folders and records; the sampler is installed."""
        if not _STUDY_NAME.fullmatch(self.name) or any(unicodedata.category(c) in _UNSEEN for c in self.name):
            raise SpecError(spec_file, "study.name", self.name, "a name of 1 to 100 characters without "
                            '/, :, " or control characters (Unicode Cc, Cf: bidi overrides, zero-width; Zl, Zp), '
                            "not . or .., no space or \\ at either end")  # fmt: skip
        if self.sampler == "gp" and importlib.util.find_spec("torch") is None:
            needs = "tpe, nsga2 or random (gp needs PyTorch: pip install 'tradeoff_search[gp]')"
            raise SpecError(spec_file, "study.sampler", "gp", needs)


def micro_installed() -> bool:
    """Whether the micro runtime, which measures RAM (``pip install 'tradeoff_search[micro]'``), is importable."""
    return importlib.util.find_spec(MICRO_PACKAGE) is not None


def needs_micro(spec_file: Path, key: str, value: object) -> None:
    """Refuse ``key`` (a RAM budget or objective) when the micro runtime that measures RAM is missing."""
    if not micro_installed():
        needs = "the micro runtime installed, which measures RAM: pip install 'tradeoff_search[micro]' (x86-64 Linux)"
        raise SpecError(spec_file, key, value, needs)


@dataclass(frozen=True)
class ObjectivesSection(Section):
    """``[objectives]``: accuracy is maximized, latency minimized, and any ``extra`` minimized too."""

    accuracy: str = setting(Scalar(str, choices=("accuracy", "balanced_accuracy")), "accuracy")
    extra: Categorical = setting(Choice(str, COMPANIONS, may_be_empty=True), Categorical(()))

    def check(self, spec_file: Path) -> None:
        """``ram_bytes`` needs the micro runtime."""
        if RAM_BYTES in self.extra.choices:
            needs_micro(spec_file, "objectives.extra", list(self.extra.choices))


@dataclass(frozen=True)
class BudgetSection(Section):
    """``[budget]``: what a shipped model may cost at most. A candidate over any of them is never
    trained: it is recorded with the constraint it broke (``latency_ms_over_budget``,
    ``ram_kb_over_budget``, ``flash_kb_over_budget``). ``latency.budget_ms`` is ``latency_ms``
    under its other name: a spec gives one of them."""

    latency_ms: float | None = setting(Scalar(float, POSITIVE), None)  # latency_ms, the objective
    ram_kb: float | None = setting(Scalar(float, POSITIVE), None)  # the micro runtime's arena, kB of 1024 bytes
    flash_kb: float | None = setting(Scalar(float, POSITIVE), None)  # the .tflite's bytes, kB of 1024

    def check(self, spec_file: Path) -> None:
        """A RAM budget needs the micro runtime."""
        if self.ram_kb is not None:
            needs_micro(spec_file, "budget.ram_kb", self.ram_kb)


@dataclass(frozen=True)
class LatencySection(Section):
    """``[latency]``: how inference latency is measured."""

    runtime: str = setting(Scalar(str, choices=("litert", "tf")), "litert")
    batch_size: Categorical = setting(Choice(int, bounds=_TIMED_BATCH), Categorical((1,)))
    threads: int = setting(Scalar(int, Interval(1, 1024)), 1)
    statistic: str = setting(Scalar(str, choices=("p10", "median")), "p10")
    max_seconds: float = setting(Scalar(float, _SECONDS), 1.0)
    budget_ms: float | None = setting(Scalar(float, POSITIVE), None)  # the same as [budget] latency_ms
    # a string fixes the mode, a list searches it (the trial parameter ``quantization``)
    quantization: Categorical = setting(Choice(str, QUANTIZATIONS), Categorical(("none",)))
    representative_rows: int = setting(Scalar(int, AT_LEAST_ONE), 200)  # int8's calibration sample
    # a worker process whose conversion to LiteRT takes longer is ended (see process._channel)
    conversion_timeout: float = setting(Scalar(float, _CONVERSION_SECONDS), 600.0)
    io: str = setting(Scalar(str, choices=("float", "int8")), "float")  # int8 models' input and output
    # where candidates are timed: this machine, or a latency server on the target device
    device: str = setting(Device(), "local")

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Every batch size to time, from ``batch_size = 1`` or ``batch_size = [1, 32]``. The first
        is the objective's (``latency_ms``, the budget); the others are recorded per trial as
        ``latency_ms_batch{N}``."""
        return self.batch_size.choices

    def check(self, spec_file: Path) -> None:
        """Quantization, integer input and output and a latency server all need LiteRT (and int8 io an int8 mode)."""
        quantized = self.quantization.choices != ("none",)
        if self.runtime == "tf" and quantized:
            raise SpecError(spec_file, "latency.quantization", list(self.quantization.choices),
                            '"none" with runtime = "tf" (quantization is LiteRT\'s: runtime = "litert")')  # fmt: skip
        if self.io == "int8" and "int8" not in self.quantization.choices:
            raise SpecError(spec_file, "latency.io", self.io, '"float" unless quantization includes "int8"')
        if self.device != "local" and self.runtime != "litert":
            expected = f"'litert' (a latency server times .tflite files; latency.device = '{self.device}')"
            raise SpecError(spec_file, "latency.runtime", self.runtime, expected)


@dataclass(frozen=True)
class ModelSection(Section):
    """``[model]``: the architecture space. ``families`` is searched too; each family's knobs are
    suggested only for trials of that family (mlp: n_layers, units; cnn1d/cnn2d: conv_blocks,
    filters, kernel_size, downsample, residual; gru: gru_layers, gru_units).

    Your own builders: ``builder = "models.py:build"`` searches that one alone (its family is
    named after the function); ``[model.builders]`` names several (``mine = "models.py:build"``),
    to list in ``families`` beside the built-in ones. See ``tradeoff_search.space._builders``."""

    families: Categorical = setting(Choice(str), Categorical(("mlp",)))
    builder: str | None = setting(Scalar(str), None)
    builders: tuple[tuple[str, str], ...] = setting(Builders(FAMILIES), ())
    n_layers: IntRange = setting(Range(int, _LAYERS), IntRange(1, 3))
    units: IntRange = setting(Range(int, _WIDTH, log=True), IntRange(16, 512, log=True))
    conv_blocks: IntRange = setting(Range(int, _BLOCKS), IntRange(1, 3))
    filters: IntRange = setting(Range(int, _CHANNELS, log=True), IntRange(8, 64, log=True))
    kernel_size: Categorical = setting(Choice(int, bounds=_KERNEL), Categorical((3, 5)))
    downsample: Categorical = setting(Choice(str, ("max", "stride", "none")), Categorical(("max", "stride", "none")))
    residual: Categorical = setting(Choice(bool), Categorical((False, True)))
    gru_layers: IntRange = setting(Range(int, _RNN_LAYERS), IntRange(1, 2))
    gru_units: IntRange = setting(Range(int, _CHANNELS, log=True), IntRange(8, 64, log=True))
    activation: Categorical = setting(Choice(str, ACTIVATIONS), Categorical(("relu", "gelu", "tanh")))
    dropout: FloatRange = setting(Range(float, _BELOW_ONE), FloatRange(0.0, 0.3))
    batch_norm: Categorical = setting(Choice(bool), Categorical((False,)))


@dataclass(frozen=True)
class OptimizerSection(Section):
    """``[optimizer]``: the optimizer space; conditional knobs apply only where they mean something."""

    name: Categorical = setting(Choice(str, OPTIMIZERS), Categorical(OPTIMIZERS))
    learning_rate: FloatRange = setting(Range(float, POSITIVE, log=True), FloatRange(1e-4, 3e-2, log=True))
    schedule: Categorical = setting(
        Choice(str, ("constant", "cosine", "exponential")), Categorical(("constant", "cosine", "exponential"))
    )
    weight_decay: FloatRange = setting(Range(float, POSITIVE, log=True), FloatRange(1e-6, 1e-2, log=True))
    momentum: FloatRange = setting(Range(float, _BELOW_ONE), FloatRange(0.0, 0.95))
    nesterov: Categorical = setting(Choice(bool), Categorical((False, True)))


@dataclass(frozen=True)
class TrainingSection(Section):
    """``[training]``: batch size (searched), the epoch budget (fixed) and multi-objective early
    stopping (``pruning``: see ``tradeoff_search.trial._pruning``)."""

    batch_size: Categorical = setting(Choice(int, bounds=_TRAIN_BATCH), Categorical((32, 64, 128)))
    max_epochs: int = setting(Scalar(int, AT_LEAST_ONE), 30)
    patience: int = setting(Scalar(int, AT_LEAST_ONE), 5)
    pruning: bool = setting(Scalar(bool), False)
    pruning_margin: float = setting(Scalar(float, _BELOW_ONE), 0.02)


@dataclass(frozen=True)
class TrackingSection(Section):
    """``[tracking]``: the MLflow record."""

    experiment: str = setting(Scalar(str), "")
    log_models: str = setting(Scalar(str, choices=("pareto", "all", "none")), "pareto")
    # one number per objective: [accuracy, latency_ms, *extra]; default [0, budget_ms or 100]
    hypervolume_reference: tuple[float, ...] | None = setting(Point(), None)
