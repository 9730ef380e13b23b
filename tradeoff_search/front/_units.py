"""The unit latencies are shown in: one per study, so that a column or an axis reads in one unit.

The objective stays ``latency_ms`` (Optuna, optuna-dashboard and ``pareto.csv`` read it); people
read LiteRT's small models in µs (0.6 µs at its floor reads ``0.0005969`` in ms) and large models
in ms.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tradeoff_search.record._keys import LATENCY_DISPLAY_METRIC, LATENCY_METRIC, RETIMED_METRIC

if TYPE_CHECKING:
    from tradeoff_search.front._front import Front


@dataclasses.dataclass(frozen=True)
class LatencyUnit:
    """A unit latencies are shown in: its symbol, how many make a millisecond, and the MLflow
    metric that holds a run's latency in it."""

    symbol: str
    per_ms: float
    metric: str


MICROSECONDS = LatencyUnit("µs", 1e3, LATENCY_DISPLAY_METRIC)
MILLISECONDS = LatencyUnit("ms", 1.0, LATENCY_METRIC)


def latency_unit(latencies_ms: Iterable[float]) -> LatencyUnit:
    """µs while the median latency is under a millisecond (and with none yet), else ms: the
    typical latency then reads between 1 and 1000 of the unit (or under 1 µs at LiteRT's floor)."""
    finite = [value for value in latencies_ms if math.isfinite(value)]
    return MICROSECONDS if not finite or statistics.median(finite) < 1.0 else MILLISECONDS


def front_latency_unit(front: Front) -> LatencyUnit:
    """The unit of the latencies on ``front`` (µs when it has no ``latency_ms`` objective)."""
    if LATENCY_METRIC not in front.metric_names:
        return MICROSECONDS
    index = list(front.metric_names).index(LATENCY_METRIC)
    return latency_unit(trial.values[index] for trial in front.best_trials)


def in_microseconds(latency_ms: float) -> float:
    """``latency_ms`` in µs to 4 significant digits (MLflow shows a metric's every digit)."""
    return float(f"{latency_ms * 1e3:.4g}")


def readable_latencies(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows with their latencies (``latency_ms``, ``latency_retimed_ms``) in the unit
    :func:`latency_unit` picks for the objective's column, each column named after it (``latency_µs``)."""
    unit = latency_unit(row[LATENCY_METRIC] for row in rows if isinstance(row.get(LATENCY_METRIC), float | int))

    def shown(key: str, value: Any) -> tuple[str, Any]:
        if key not in (LATENCY_METRIC, RETIMED_METRIC) or unit is MILLISECONDS:
            return key, value
        return key.removesuffix("ms") + unit.symbol, value * unit.per_ms if isinstance(value, float | int) else value

    return [dict(shown(key, value) for key, value in row.items()) for row in rows]
