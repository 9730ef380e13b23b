"""The front of a study's trials, computed once where the trials change and handed to whoever shows it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tradeoff_search.front._pareto import (
    hypervolume,
    latency_index,
    metric_names,
    nondomination_ranks,
    pareto_ranks,
)
from tradeoff_search.record._keys import (
    N_PARAMS,
    PARAMS_METRIC,
    QUANTIZATION_PARAM,
    RETIMED_ATTR,
    RETIMED_METRIC,
    VARIANT_OF,
)

if TYPE_CHECKING:
    import optuna


@dataclasses.dataclass(frozen=True)
class Front:
    """The Pareto front of a multi-objective study's trials (ranks from moocore).

    Build it with :meth:`of` (a study) or :meth:`from_trials`, once per change of the trials, and
    hand it on: the MLflow tags, the report, ``select`` and the CLI's tables read the same one.
    """

    trials: Sequence[optuna.trial.FrozenTrial]  # every trial it was computed from
    directions: tuple[optuna.study.StudyDirection, ...]
    metric_names: tuple[str, ...]
    ranks: Mapping[int, int]  # non-domination rank (0 = the front) of each feasible completed trial, by number
    best_trials: tuple[optuna.trial.FrozenTrial, ...]  # the front (rank 0), fastest first
    retimed: Mapping[int, float]  # re-timed latencies side by side, by trial number (empty: never re-timed)
    retimed_front: frozenset[int]  # of best_trials, those still on the front with their re-timed latencies

    @classmethod
    def of(cls, study: optuna.Study) -> Front:
        """The front of ``study``'s trials, with its stored re-timed latencies (see ``retime_front``)."""
        front = cls.from_trials(study.get_trials(deepcopy=False), study.directions, metric_names(study))
        stored = study.user_attrs.get(RETIMED_ATTR) or {}
        return front.with_retimed({int(number): value for number, value in stored.items()})

    @classmethod
    def from_trials(
        cls,
        trials: Sequence[optuna.trial.FrozenTrial],
        directions: Sequence[optuna.study.StudyDirection],
        names: Sequence[str],
    ) -> Front:
        """The front of ``trials`` (objectives named ``names``), never re-timed."""
        ranks = pareto_ranks(trials, directions)
        latency = latency_index(names)
        best = sorted((t for t in trials if ranks.get(t.number) == 0), key=lambda t: (t.values[latency], t.number))
        numbers = frozenset(t.number for t in best)
        return cls(trials, tuple(directions), tuple(names), ranks, tuple(best), {}, numbers)

    def with_retimed(self, retimed: Mapping[int, float]) -> Front:
        """This front with the latencies of ``retimed`` (by trial number) in place of those the
        trials measured: which of its trials they leave on the front (all of it when empty)."""
        if not retimed:
            return dataclasses.replace(self, retimed={}, retimed_front=frozenset(t.number for t in self.best_trials))
        latency = latency_index(self.metric_names)
        points = []
        for trial in self.best_trials:
            values = list(trial.values)
            values[latency] = retimed.get(trial.number, values[latency])
            points.append(values)
        ranks = nondomination_ranks(points, self.directions)
        still = frozenset(t.number for t, rank in zip(self.best_trials, ranks, strict=True) if rank == 0)
        return dataclasses.replace(self, retimed=dict(retimed), retimed_front=still)

    def hypervolume(self, reference: Sequence[float]) -> float:
        """The front's hypervolume up to ``reference`` (see :func:`~tradeoff_search.front._pareto.hypervolume`)."""
        return hypervolume([t.values for t in self.best_trials], self.directions, self.metric_names, reference)

    def hypervolume_history(self, reference: Sequence[float]) -> list[tuple[int, float]]:
        """``(trial number, hypervolume of the feasible front so far)`` after each completed trial."""
        import optuna

        done = sorted((t for t in self.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number)
        fronts = (Front.from_trials(done[: i + 1], self.directions, self.metric_names) for i in range(len(done)))
        return [(trial.number, front.hypervolume(reference)) for trial, front in zip(done, fronts, strict=True)]

    def rows(self) -> list[dict[str, Any]]:
        """One plain row per Pareto trial: number, objective values, size and its hyperparameters.
        Once the front was re-timed, also its re-timed latency and whether it is still on the front
        with it (``pareto_retimed``). In a study with quantization variants (see ``_variants``), each
        row's ``quantization`` comes first of its hyperparameters, then ``variant_of``: the trained
        trial a variant's model is (blank for a trained trial), so rows that share a training show it."""
        with_variants = any(VARIANT_OF in t.user_attrs for t in self.trials)
        rows = []
        for trial in self.best_trials:
            row: dict[str, Any] = {"trial": trial.number}
            row.update(zip(self.metric_names, trial.values, strict=True))
            if self.retimed:
                row[RETIMED_METRIC] = self.retimed.get(trial.number)
                row["pareto_retimed"] = trial.number in self.retimed_front
            if PARAMS_METRIC not in self.metric_names:  # as an objective, it is already a column
                row[N_PARAMS] = trial.user_attrs.get(N_PARAMS)
            if with_variants:
                row[QUANTIZATION_PARAM] = trial.params.get(QUANTIZATION_PARAM)
                row[VARIANT_OF] = trial.user_attrs.get(VARIANT_OF)
            row.update(trial.params)
            rows.append(row)
        return rows


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The rows of ``study``'s front (see :meth:`Front.rows`)."""
    return Front.of(study).rows()
