"""The math of a front, thin over moocore: feasibility, non-domination ranks, hypervolume; a table as text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search.front._units import readable_latencies
from tradeoff_search.record._keys import LATENCY_METRIC
from tradeoff_search.spec._spec import DEFAULT_REFERENCE_LATENCY_MS

if TYPE_CHECKING:
    import optuna


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def pareto_ranks(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[optuna.study.StudyDirection]
) -> dict[int, int]:
    """Non-domination rank (0 = the Pareto front) of each feasible completed trial, by number."""
    import optuna

    feasible = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and is_feasible(t)]
    ranks = nondomination_ranks([t.values for t in feasible], directions)
    return {t.number: rank for t, rank in zip(feasible, ranks, strict=True)}


def nondomination_ranks(
    points: Sequence[Sequence[float]], directions: Sequence[optuna.study.StudyDirection]
) -> list[int]:
    """Non-domination rank of each point, 0 for the non-dominated ones (moocore)."""
    import moocore
    import optuna

    if not points:
        return []
    maximise = [d == optuna.study.StudyDirection.MAXIMIZE for d in directions]
    ranks = moocore.pareto_rank(np.array(points, dtype=float), maximise=maximise)
    return [int(rank) - int(ranks.min()) for rank in ranks]


def is_nondominated_by(
    values: Sequence[float], others: Sequence[Sequence[float]], directions: Sequence[optuna.study.StudyDirection]
) -> bool:
    """Whether no point of ``others`` dominates ``values``."""
    import moocore
    import optuna

    if not others:
        return True
    maximise = [d == optuna.study.StudyDirection.MAXIMIZE for d in directions]
    points = np.array([*others, values], dtype=float)
    return bool(moocore.is_nondominated(points, maximise=maximise, keep_weakly=True)[-1])


def fastest_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the lowest latency, feasible or not (the first of equals)."""
    index = latency_index(metric_names(study))
    return min(completed_trials(study), key=lambda t: (t.values[index], t.number), default=None)


def metric_names(study: optuna.Study) -> list[str]:
    """The study's objective names (``objective_0``, … when unset)."""
    return list(study.metric_names or [f"objective_{i}" for i in range(len(study.directions))])


def latency_index(names: Sequence[str]) -> int:
    """Which objective is the latency: the one named ``latency_ms``, else the last."""
    return list(names).index(LATENCY_METRIC) if LATENCY_METRIC in names else len(names) - 1


def default_reference(names: Sequence[str]) -> list[float] | None:
    """Accuracy 0 and 100 ms for ``(accuracy, latency_ms)`` studies; none for other studies."""
    if len(names) == 2 and LATENCY_METRIC in names:
        return [DEFAULT_REFERENCE_LATENCY_MS if name == LATENCY_METRIC else 0.0 for name in names]
    return None


def hypervolume(
    points: Sequence[Sequence[float]],
    directions: Sequence[optuna.study.StudyDirection],
    names: Sequence[str],
    reference: Sequence[float],
) -> float:
    """Hypervolume dominated by ``points`` up to ``reference`` (both in objective units).

    Objectives named ``latency_ms`` are compared as log10 of microseconds (latencies span orders
    of magnitude: a 2× speed-up counts the same at 2 µs as at 2 ms); points that
    do not beat the reference in every objective add nothing.
    """
    import moocore
    import optuna

    def transform(row: Sequence[float]) -> list[float]:
        return [math.log10(max(v, 1e-9) * 1e3) if n == LATENCY_METRIC else v for v, n in zip(row, names, strict=True)]

    maximise = [d == optuna.study.StudyDirection.MAXIMIZE for d in directions]
    ref = transform(reference)
    kept = [
        row
        for row in map(transform, points)
        if all((v > r) if up else (v < r) for v, r, up in zip(row, ref, maximise, strict=True))
    ]
    if not kept:
        return 0.0
    return float(moocore.hypervolume(np.array(kept, dtype=float), ref=ref, maximise=maximise))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned text table (columns in first-seen order; blanks where a row lacks one),
    latencies in a unit that reads (see :func:`readable_latencies`)."""
    if not rows:
        return "(no completed feasible trials yet)"
    rows = readable_latencies(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
