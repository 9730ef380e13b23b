"""The front: non-domination ranks and hypervolume (thin over moocore), and the front as a table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna

# Hypervolume is taken over (1 - accuracy, log10 latency in µs): latencies span orders of
# magnitude, so equal ratios should count alike. The default reference point is accuracy 0 and
# 100 ms (log10 1e5 µs = 5); with a latency budget, the budget.
DEFAULT_REFERENCE_LATENCY_MS = 100.0


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def pareto_ranks(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[optuna.study.StudyDirection]
) -> dict[int, int]:
    """Non-domination rank (0 = the Pareto front) of each feasible completed trial, by number."""
    import moocore
    import optuna

    feasible = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and is_feasible(t)]
    if not feasible:
        return {}
    maximise = [d == optuna.study.StudyDirection.MAXIMIZE for d in directions]
    ranks = moocore.pareto_rank(np.array([t.values for t in feasible], dtype=float), maximise=maximise)
    return {t.number: int(rank) - int(ranks.min()) for t, rank in zip(feasible, ranks, strict=True)}


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible Pareto-optimal trials, fastest first."""
    latency_index = _latency_index(study)
    front = study.best_trials
    return sorted(front, key=lambda t: (t.values[latency_index], t.number))


def _latency_index(study: optuna.Study) -> int:
    names = study.metric_names or []
    return names.index("latency_ms") if "latency_ms" in names else len(study.directions) - 1


def tradeoff_hypervolume(
    accuracy_latency: Sequence[tuple[float, float]], reference_latency_ms: float = DEFAULT_REFERENCE_LATENCY_MS
) -> float:
    """Hypervolume of ``(accuracy, latency_ms)`` points in (error, log10 µs) space."""
    import moocore

    reference = (1.0, math.log10(reference_latency_ms * 1e3))
    points = [(1.0 - acc, math.log10(max(lat, 1e-9) * 1e3)) for acc, lat in accuracy_latency]
    points = [p for p in points if p[0] < reference[0] and p[1] < reference[1]]
    if not points:
        return 0.0
    return float(moocore.hypervolume(np.array(points), ref=reference))


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One plain row per Pareto trial: number, objective values, size and its hyperparameters."""
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    rows = []
    for trial in front_trials(study):
        row: dict[str, Any] = {"trial": trial.number}
        row.update(zip(names, trial.values, strict=True))
        row["n_params"] = trial.user_attrs.get("n_params")
        row.update(trial.params)
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned text table (columns in first-seen order; blanks where a row lacks one)."""
    if not rows:
        return "(no completed feasible trials yet)"
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
