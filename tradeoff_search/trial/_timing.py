"""Timing a trial's model before training: converted in each mode, measured in the study's
calibrated units (see :meth:`~tradeoff_search.cost._latency.LatencyStats.normalized_ms`), and, in
a study that asks for RAM, its RAM on the micro runtime (see ``cost._memory``); flash is the
converted file's bytes. Each is set against its budget (see ``_screen.budget_excess``).

Latency and RAM do not depend on the weights, so a model is measured untrained; for ``int8`` it
is calibrated on the untrained model, which changes its scales, not its operators. Every mode is
converted from one trace of the model and all are timed side by side in one measurement (one
warm-up, one drift reference, the same machine states for all), not one measurement each.
A ``dynamic`` conversion that quantizes no weight (none has 1024 elements) is the float32 model:
beside ``none`` it is not timed, nor scored after training (see :meth:`TimedModes.not_worth`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search.cost._convert import (
    Conversion,
    ConversionError,
    conversion_reason,
    convert_modes_as_shipped,
    quantizes_weights,
)
from tradeoff_search.cost._harness import LOCAL
from tradeoff_search.cost._latency import LatencyStats, calibrate_reference, measure_latencies
from tradeoff_search.cost._memory import REFUSED_RAM_BYTES, NotDeployable, RamMeasurement, measure_rams, start_ram_meter
from tradeoff_search.record._keys import (
    LATENCY,
    MODEL_BYTES,
    NORMALIZED_MS,
    RAM_BYTES,
    RAM_REFUSAL,
    calibration_attr,
    latency_at_batch,
)
from tradeoff_search.space._builders import BuilderError
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.trial._build import Built
from tradeoff_search.trial._screen import budget_excess, measures_ram

if TYPE_CHECKING:
    import keras
    import optuna

_logger = logging.getLogger(__name__)
_AS_TRAINED = 1e-3  # an untrained model's zero weights while it converts (see nonzero_as_trained)

# A quantized mode is converted and scored after training only if its latency is below this
# share of the float32 model's: at batch 1 near LiteRT's per-call floor, int8 and dynamic are
# often no faster than float32 (measured: 0.9–1.3× on digits' MLPs), and a mode no faster than
# the float32 model, which is at least as accurate, is dominated by it anyway.
WORTH_BELOW = 0.9


@dataclass(frozen=True)
class Timed:
    """A model converted in one mode and timed: its latency objective, its extra objectives, the
    user attributes it gives a trial, and its constraints: each budget's excess (see
    ``_screen.budget_excess``; empty without budgets)."""

    latency_ms: float
    extras: tuple[float, ...]
    user_attrs: dict[str, Any]
    constraints: dict[str, float]

    @property
    def over_budget(self) -> bool:
        return any(excess > 0 for excess in self.constraints.values())

    def objectives(self, accuracy: float) -> tuple[float, ...]:
        """The trial's values with ``accuracy``: ``(accuracy, latency_ms, *extras)``."""
        return (accuracy, self.latency_ms, *self.extras)


@dataclass(frozen=True)
class TimedModes:
    """A model timed in its trial's mode (``own``) and in each other mode of the spec (its
    variants', see ``_variants``): timed, or the reason the converter could not apply it.

    Attributes:
        own: the trial's own mode.
        others: every other mode, timed or the converter's reason.
        float_model: the float32 model's timing (mode ``none``), if among the modes.
        unquantized: modes whose conversion left the float32 model, not timed: why (``dynamic``
            of a model without a weight of 1024 elements), when ``none`` is among the modes.
    """

    own: Timed
    others: dict[str, Timed | ConversionError]
    float_model: Timed | None = None
    unquantized: dict[str, str] = field(default_factory=dict)

    def fits(self) -> bool:
        """Whether some mode of the model meets the budget."""
        return any(isinstance(t, Timed) and not t.over_budget for t in (self.own, *self.others.values()))

    def best(self) -> tuple[float, ...]:
        """The best of each objective known before training, over the modes."""
        timed = [(t.latency_ms, *t.extras) for t in (self.own, *self.others.values()) if isinstance(t, Timed)]
        return tuple(map(min, zip(*timed, strict=True)))

    def not_worth(self, mode: str) -> str | None:
        """Why the trained model is not converted to ``mode`` (another mode than its trial's) and
        scored, else None: it is the float32 model, or it is not faster than it by a margin."""
        if mode in self.unquantized:
            return self.unquantized[mode]
        timed, reference = self.others.get(mode), self.float_model
        if mode == "none" or not isinstance(timed, Timed) or reference is None:
            return None
        ratio = timed.latency_ms / reference.latency_ms
        if ratio < WORTH_BELOW:
            return None
        return (f"not converted after training: {mode} timed {ratio:.2f}x the float32 model's latency "
                f"before training, not below {WORTH_BELOW}x")  # fmt: skip


class Timing:
    """A study's latency measurements of its trials' models, as the spec's ``[latency]`` says.

    Args:
        spec: the study spec.
    """

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        if measures_ram(spec) and spec.latency.device == LOCAL:
            start_ram_meter()  # its imports overlap the first conversion

    def time_modes(self, trial: optuna.Trial, built: Built, modes: Sequence[str], x_train: np.ndarray) -> TimedModes:
        """Time ``built``'s model in ``modes`` (its own first, its user attributes set on ``trial``),
        all side by side; ``x_train`` calibrates ``int8``.

        Raises:
            ConversionError: the converter cannot apply the trial's own mode to the model.
        """
        own_mode = modes[0]
        converted = self._convert(built, modes, x_train)
        own_conversion = converted[own_mode]
        if isinstance(own_conversion, ConversionError):
            raise own_conversion
        unquantized = {mode: _UNQUANTIZED for mode in modes[1:] if _unquantized(mode, converted)}
        to_time = {mode: c for mode, c in converted.items() if isinstance(c, Conversion) and mode not in unquantized}
        timed = self._time(trial.study, built, to_time)
        own = timed[own_mode]
        for key, value in own.user_attrs.items():
            trial.set_user_attr(key, value)
        others: dict[str, Timed | ConversionError] = {}
        for mode in modes[1:]:
            conversion = converted[mode]
            if mode in timed:
                others[mode] = timed[mode]
            elif isinstance(conversion, ConversionError):
                others[mode] = conversion
        return TimedModes(own, others, timed.get("none"), unquantized)

    def calibrate(self, study: optuna.Study) -> dict[str, float]:
        """Each batch size's calibration (see ``TradeoffObjective.calibrate``); returns the first's."""
        primary, *others = self.spec.latency.batch_sizes
        for batch_size in others:
            self._calibration(study, batch_size)
        return self._calibration(study, primary)

    def _calibration(self, study: optuna.Study, batch_size: int) -> dict[str, float]:
        spec = self.spec.latency
        settings: dict[str, Any] = {
            "runtime": spec.runtime,
            "batch_size": batch_size,
            "threads": spec.threads,
            "device": spec.device,
        }
        name = calibration_attr(batch_size, self.spec.latency.batch_sizes[0])
        stored = study.user_attrs.get(name)
        # Calibrations from before latency servers were all local.
        if stored is None or any({"device": LOCAL, **stored}.get(k) != v for k, v in settings.items()):
            stored = calibrate_reference(**settings)
            study.set_user_attr(name, stored)
            _logger.info(
                "latency calibration, batch %d: reference model %.4f ms (p10) on %s (%s)",
                batch_size,
                stored["p10_ms"],
                stored["cpu"],
                spec.device,
            )
        return stored

    def _measure(
        self,
        study: optuna.Study,
        models: Sequence[keras.Model | bytes],
        batch_size: int,
        budget_ms: float | None = None,
    ) -> list[tuple[LatencyStats, float]]:
        """Time ``models`` side by side at ``batch_size``: each one's statistics and calibrated
        ``latency_ms``. With ``budget_ms``, timing stops as soon as each is surely over it."""
        spec = self.spec.latency
        calibration_ms = self._calibration(study, batch_size)[f"{spec.statistic}_ms"]
        measured = measure_latencies(
            models,
            runtime=spec.runtime,
            batch_size=batch_size,
            threads=spec.threads,
            statistic=spec.statistic,
            max_seconds=spec.max_seconds,
            stop_above_reference=None if budget_ms is None else budget_ms / calibration_ms,
            device=spec.device,
        )
        return [(stats, stats.normalized_ms(calibration_ms)) for stats in measured]

    def _time(self, study: optuna.Study, built: Built, conversions: dict[str, Conversion]) -> dict[str, Timed]:
        """Measure the RAM of ``built``'s model as converted in each mode if the study asks, and
        time them side by side; further batch sizes only for the modes within the budgets."""
        latency_spec = self.spec.latency
        files = [conversion.flatbuffer for conversion in conversions.values()]
        # Where the latency is measured: here, or on the latency server's side.
        rams = measure_rams(files, latency_spec.device) if measures_ram(self.spec) else [None] * len(files)
        models = files if latency_spec.runtime == "litert" else [built.model] * len(files)
        primary, *others = latency_spec.batch_sizes
        measured = self._measure(study, models, primary, latency_spec.budget_ms)
        timed = [self._timed(built, stats, latency_ms, len(file), ram)
                 for (stats, latency_ms), file, ram in zip(measured, files, rams, strict=True)]  # fmt: skip
        within = [i for i, mode in enumerate(timed) if not mode.over_budget]
        for batch_size in others if within else ():
            at_batch = self._measure(study, [models[i] for i in within], batch_size)
            for i, (_, latency_ms) in zip(within, at_batch, strict=True):
                timed[i].user_attrs[latency_at_batch(batch_size)] = latency_ms
        return dict(zip(conversions, timed, strict=True))

    def _timed(
        self,
        built: Built,
        stats: LatencyStats,
        latency_ms: float,
        size: int,
        ram: RamMeasurement | NotDeployable | None,
    ) -> Timed:
        """A mode's measurements as a :class:`Timed`: user attributes, extra objectives, constraints."""
        attrs: dict[str, Any] = {LATENCY: {**stats.to_dict(), NORMALIZED_MS: latency_ms}, MODEL_BYTES: size}
        measured = {**built.companions, MODEL_BYTES: size}
        if isinstance(ram, RamMeasurement):
            attrs[RAM_BYTES] = measured[RAM_BYTES] = ram.arena_bytes
        elif ram is not None:  # the micro runtime cannot run it: it counts as more than any arena
            attrs[RAM_REFUSAL], measured[RAM_BYTES] = str(ram), REFUSED_RAM_BYTES
        extras = tuple(float(measured[name]) for name in self.spec.objectives.extra.choices)
        return Timed(latency_ms, extras, attrs, budget_excess(self.spec, latency_ms, size, ram))

    def _convert(
        self, built: Built, modes: Sequence[str], x_train: np.ndarray
    ) -> dict[str, Conversion | ConversionError]:
        """The LiteRT flatbuffers timed, in each mode, or why the converter cannot apply it. A
        user builder's model that does not convert at all fails the trial with the reason
        (:class:`BuilderError`); the study goes on."""
        try:
            with nonzero_as_trained(built.model):
                return convert_modes_as_shipped(built.traced, modes, self.spec, x_train)
        except Exception as error:  # the converter raises several kinds, with MLIR's reasons
            if not built.by_user:
                raise  # a built-in family's model that does not convert is a bug of ours
            reason = f"{type(error).__name__}: {conversion_reason(error)}"
            raise BuilderError(built.family, f"a model that converts to LiteRT ({reason})") from error


def _unquantized(mode: str, converted: dict[str, Conversion | ConversionError]) -> bool:
    """Whether ``mode``'s conversion left the float32 model, timed beside it as ``none``."""
    conversion = converted[mode]
    return (mode == "dynamic" and "none" in converted and isinstance(conversion, Conversion)
            and not quantizes_weights(conversion.flatbuffer))  # fmt: skip


_UNQUANTIZED = ("not timed, nor converted after training: dynamic quantizes none of its weights (none has 1024 "
                "elements), so it is the float32 model")  # fmt: skip


@contextlib.contextmanager
def nonzero_as_trained(model: keras.Model) -> Iterator[None]:
    """``model`` with each all-zero float weight (biases, batch norm's offsets and means, as
    initialized) set to a small constant while it converts, as training leaves them: the converter
    drops a zero bias, so an untrained model would be timed and measured without its bias adds
    (on the micro runtime, 24 bytes of arena less per layer than the trained model needs)."""
    zeros = [w for w in model.weights if "float" in str(w.dtype) and not np.any(np.asarray(w))]
    for weight in zeros:
        weight.assign(np.full(weight.shape, _AS_TRAINED, str(weight.dtype)))
    try:
        yield
    finally:
        for weight in zeros:
            weight.assign(np.zeros(weight.shape, str(weight.dtype)))
