"""The Pareto front of a study: ranks, the re-timed front, hypervolume, the front as a table."""

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

__all__ = [
    "Front",
    "completed_trials",
    "default_reference",
    "fastest_trial",
    "format_table",
    "front_rows",
    "is_feasible",
    "is_nondominated_by",
    "metric_names",
]
