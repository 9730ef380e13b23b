"""The Pareto front of a study: ranks, the re-timed front, hypervolume, the front as a table, the
unit its latencies read in."""

from tradeoff_search.front._front import Front, front_rows
from tradeoff_search.front._pareto import (
    completed_trials,
    default_reference,
    fastest_trial,
    format_table,
    is_feasible,
    is_nondominated_by,
    metric_names,
)
from tradeoff_search.front._units import (
    MICROSECONDS,
    MILLISECONDS,
    LatencyUnit,
    front_latency_unit,
    in_microseconds,
    latency_unit,
    readable_latencies,
)

__all__ = [
    "MICROSECONDS",
    "MILLISECONDS",
    "Front",
    "LatencyUnit",
    "completed_trials",
    "default_reference",
    "fastest_trial",
    "format_table",
    "front_latency_unit",
    "front_rows",
    "in_microseconds",
    "is_feasible",
    "is_nondominated_by",
    "latency_unit",
    "metric_names",
    "readable_latencies",
]
