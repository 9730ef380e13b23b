"""Timing a trial's model before training: converted in each mode, measured in the study's
calibrated units (see :meth:`~tradeoff_search.cost._latency.LatencyStats.normalized_ms`), and, in
a study that asks for RAM, its RAM on the micro runtime (see ``cost._memory``); flash is the
converted file's bytes. Each is set against its budget (see ``_screen.budget_excess``).

Latency and RAM do not depend on the weights, so a model is measured untrained; for ``int8`` it
is calibrated on the untrained model, which changes its scales, not its operators.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search.cost._convert import Conversion, ConversionError, conversion_reason, convert_as_shipped
from tradeoff_search.cost._harness import LOCAL
from tradeoff_search.cost._latency import LatencyStats, calibrate_reference, measure_latency
from tradeoff_search.cost._memory import REFUSED_RAM_BYTES, RamMeasurement, measure_ram, start_ram_meter
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
    variants', see ``_variants``): timed, or the reason the converter could not apply it."""

    own: Timed
    others: dict[str, Timed | ConversionError]

    def fits(self) -> bool:
        """Whether some mode of the model meets the budget."""
        return any(isinstance(t, Timed) and not t.over_budget for t in (self.own, *self.others.values()))

    def best(self) -> tuple[float, ...]:
        """The best of each objective known before training, over the modes."""
        timed = [(t.latency_ms, *t.extras) for t in (self.own, *self.others.values()) if isinstance(t, Timed)]
        return tuple(map(min, zip(*timed, strict=True)))


class Timing:
    """A study's latency measurements of its trials' models, as the spec's ``[latency]`` says.

    Args:
        spec: the study spec.
    """

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        if measures_ram(spec):
            start_ram_meter()  # its imports overlap the first conversion

    def time_modes(self, trial: optuna.Trial, built: Built, modes: Sequence[str], x_train: np.ndarray) -> TimedModes:
        """Time ``built``'s model in ``modes`` (its own first, its user attributes set on ``trial``
        before the others are timed); ``x_train`` calibrates ``int8``."""
        own = self._time(trial.study, built, modes[0], x_train)
        for key, value in own.user_attrs.items():
            trial.set_user_attr(key, value)
        others: dict[str, Timed | ConversionError] = {}
        for mode in modes[1:]:
            try:
                others[mode] = self._time(trial.study, built, mode, x_train)
            except ConversionError as error:
                others[mode] = error
        return TimedModes(own, others)

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
        self, study: optuna.Study, model: keras.Model | bytes, batch_size: int, budget_ms: float | None = None
    ) -> tuple[LatencyStats, float]:
        """Time ``model`` at ``batch_size``: its statistics and its calibrated ``latency_ms``.
        With ``budget_ms``, timing stops as soon as the model is surely over it."""
        spec = self.spec.latency
        calibration_ms = self._calibration(study, batch_size)[f"{spec.statistic}_ms"]
        stats = measure_latency(
            model,
            runtime=spec.runtime,
            batch_size=batch_size,
            threads=spec.threads,
            statistic=spec.statistic,
            max_seconds=spec.max_seconds,
            stop_above_reference=None if budget_ms is None else budget_ms / calibration_ms,
            device=spec.device,
        )
        return stats, stats.normalized_ms(calibration_ms)

    def _time(self, study: optuna.Study, built: Built, quantization: str, x_train: np.ndarray) -> Timed:
        """Convert ``built``'s model in ``quantization``, measure its RAM if the study asks, and time it;
        further batch sizes only within the budgets."""
        latency_spec = self.spec.latency
        flatbuffer = self._convert(built, quantization, x_train).flatbuffer
        ram = measure_ram(flatbuffer) if measures_ram(self.spec) else None
        timed = flatbuffer if latency_spec.runtime == "litert" else built.model
        primary, *others = latency_spec.batch_sizes
        stats, latency_ms = self._measure(study, timed, primary, latency_spec.budget_ms)
        attrs: dict[str, Any] = {LATENCY: {**stats.to_dict(), NORMALIZED_MS: latency_ms}, MODEL_BYTES: len(flatbuffer)}
        measured = {**built.companions, MODEL_BYTES: attrs[MODEL_BYTES]}
        if isinstance(ram, RamMeasurement):
            attrs[RAM_BYTES] = measured[RAM_BYTES] = ram.arena_bytes
        elif ram is not None:  # the micro runtime cannot run it: it counts as more than any arena
            attrs[RAM_REFUSAL], measured[RAM_BYTES] = str(ram), REFUSED_RAM_BYTES
        extras = tuple(float(measured[name]) for name in self.spec.objectives.extra.choices)
        constraints = budget_excess(self.spec, latency_ms, len(flatbuffer), ram)
        if not any(excess > 0 for excess in constraints.values()):
            for batch_size in others:
                attrs[latency_at_batch(batch_size)] = self._measure(study, timed, batch_size)[1]
        return Timed(latency_ms, extras, attrs, constraints)

    def _convert(self, built: Built, quantization: str, x_train: np.ndarray) -> Conversion:
        """The LiteRT flatbuffer timed, in the trial's quantization mode. A mode the converter cannot
        apply to the model fails the trial with its reason (:class:`ConversionError`), and so does a
        user builder's model that does not convert at all; the study goes on."""
        try:
            return convert_as_shipped(built.model, quantization, self.spec, x_train, signature=False)
        except ConversionError:
            raise
        except Exception as error:  # the converter raises several kinds, with MLIR's reasons
            if not built.by_user:
                raise  # a built-in family's model that does not convert is a bug of ours
            reason = f"{type(error).__name__}: {conversion_reason(error)}"
            raise BuilderError(built.family, f"a model that converts to LiteRT ({reason})") from error
