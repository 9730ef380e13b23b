"""MLflow as the browsable record of a multi-objective study: a projection of the Optuna storage.

One parent run per study, one nested child run per trial, the Pareto set tagged live. Runs are
found by tag, never remembered, so resuming, several workers and :meth:`MLflowParetoCallback.sync`
never duplicate a run.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tradeoff_search._pareto import (
    completed_trials,
    front_rows,
    is_feasible,
    pareto_ranks,
    tradeoff_hypervolume,
)

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Run

_logger = logging.getLogger(__name__)

TAG_STUDY = "optuna.study"
TAG_TRIAL = "optuna.trial"
TAG_ROLE = "optuna.role"
_PARENT, _CHILD = "study", "trial"
_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}


class MLflowParetoCallback:
    """Log a multi-objective Optuna study to MLflow, with the Pareto set kept up to date.

    Works with any multi-objective study, not only ``tradeoff_search``'s: metric names come from
    ``study.metric_names`` (``objective_0``, … when unset).

    .. code-block:: python

        import optuna
        from tradeoff_search import MLflowParetoCallback

        callback = MLflowParetoCallback(tracking_uri="sqlite:///mlruns/mlflow.db", experiment="demo")
        study = optuna.create_study(directions=["maximize", "minimize"])
        study.optimize(objective, n_trials=20, callbacks=[callback])
        callback.finish(study)  # pareto.csv and the front plot on the parent run

    Layout: the parent run (named after the study) holds ``hypervolume`` (step = trial number) and,
    after :meth:`finish`, ``pareto.csv`` and ``pareto_front.png``. Each trial is a nested run
    ``trial-0007`` with its params, objective values, user attributes that are numbers, per-epoch
    ``history`` curves as stepped metrics, and the tags ``pareto`` and ``pareto_rank``.
    Trial states map to run states: COMPLETE → FINISHED, FAIL → FAILED, PRUNED → KILLED.

    Args:
        tracking_uri: MLflow tracking URI (default: MLflow's own default resolution).
        experiment: experiment name (default: the study name).
        parent_tags: extra tags for the parent run (e.g. the spec hash).
        parent_artifacts: JSON documents to log on the parent run, by file name.
        hypervolume_reference: reference point for the ``hypervolume`` metric, in objective
            space. Without one, ``(accuracy, latency_ms)`` studies use (error, log10 µs) space with
            reference (1, 5), i.e. accuracy 0 and 100 ms; other studies log no hypervolume.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        parent_tags: dict[str, str] | None = None,
        parent_artifacts: dict[str, dict[str, Any]] | None = None,
        hypervolume_reference: Sequence[float] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_tags = dict(parent_tags or {})
        self.parent_artifacts = dict(parent_artifacts or {})
        self.hypervolume_reference = list(hypervolume_reference) if hypervolume_reference is not None else None
        self._client_instance: MlflowClient | None = None
        self._parent_id: str | None = None
        self._experiment_id: str | None = None

    # ------------------------------------------------------------------ Optuna callback
    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        parent_id = self._parent(study)
        self._log_trial(study, trial, parent_id)
        self._update_front(study, parent_id, step=trial.number)

    def sync(self, study: optuna.Study) -> None:
        """Make the MLflow record match the storage: log missing trials, then :meth:`finish`.

        Idempotent: running it twice changes nothing.
        """
        import optuna

        parent_id = self._parent(study)
        logged = self._child_runs(study, parent_id)
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
        for trial in study.get_trials(deepcopy=False, states=finished):
            if trial.number not in logged:
                self._log_trial(study, trial, parent_id)
        self.finish(study)

    def finish(self, study: optuna.Study) -> None:
        """Refresh the Pareto tags, log ``pareto.csv`` and ``pareto_front.png``, close the parent run."""
        parent_id = self._parent(study)
        trials = study.get_trials(deepcopy=False)
        self._update_front(study, parent_id, step=max((t.number for t in trials), default=0))
        client = self._client
        client.log_text(parent_id, _rows_to_csv(front_rows(study)), "pareto.csv")
        if completed_trials(study):
            figure = _front_figure(study)
            client.log_figure(parent_id, figure, "pareto_front.png")
            import matplotlib.pyplot as plt

            plt.close(figure)
        client.set_terminated(parent_id, "FINISHED")

    # ------------------------------------------------------------------ runs
    @property
    def _client(self) -> MlflowClient:
        if self._client_instance is None:
            from mlflow import MlflowClient

            self._client_instance = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client_instance

    def _experiment_of(self, study: optuna.Study) -> str:
        if self._experiment_id is None:
            client = self._client
            name = self.experiment or study.study_name
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                from mlflow.exceptions import MlflowException

                try:
                    self._experiment_id = client.create_experiment(name)
                except MlflowException:  # another worker created it first
                    self._experiment_id = client.get_experiment_by_name(name).experiment_id
            else:
                self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def _search(self, study: optuna.Study, filter_string: str) -> list[Run]:
        runs: list[Run] = []
        token = None
        while True:
            page = self._client.search_runs(
                [self._experiment_of(study)], filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _parent(self, study: optuna.Study) -> str:
        """The study's parent run: found by tag, created once; a concurrent twin is deleted."""
        if self._parent_id is not None:
            return self._parent_id
        query = f"tags.`{TAG_STUDY}` = '{_quote(study.study_name)}' and tags.`{TAG_ROLE}` = '{_PARENT}'"
        runs = self._search(study, query)
        if not runs:
            tags = {
                TAG_STUDY: study.study_name,
                TAG_ROLE: _PARENT,
                "optuna.directions": ",".join(d.name.lower() for d in study.directions),
                "optuna.sampler": type(study.sampler).__name__,
                "optuna.metric_names": ",".join(_metric_names(study)),
                **self.parent_tags,
            }
            run = self._client.create_run(self._experiment_of(study), tags=tags, run_name=study.study_name)
            for name, document in self.parent_artifacts.items():
                self._client.log_dict(run.info.run_id, document, name)
            runs = self._search(study, query)
        # Two workers starting at once may both create one: all keep the oldest.
        runs.sort(key=lambda r: (r.info.start_time, r.info.run_id))
        for twin in runs[1:]:
            self._client.delete_run(twin.info.run_id)
        self._parent_id = runs[0].info.run_id
        return self._parent_id

    def _child_runs(self, study: optuna.Study, parent_id: str) -> dict[int, Run]:
        runs = self._search(study, f"tags.`mlflow.parentRunId` = '{parent_id}'")
        return {int(r.data.tags[TAG_TRIAL]): r for r in runs}

    def _log_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, parent_id: str) -> str:
        from mlflow.entities import Metric, Param, RunTag

        client = self._client
        query = f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{TAG_TRIAL}` = '{trial.number}'"
        existing = self._search(study, query)
        if existing:
            return existing[0].info.run_id
        start = _millis(trial.datetime_start)
        end = _millis(trial.datetime_complete) or start
        run = client.create_run(
            self._experiment_of(study),
            start_time=start,
            run_name=f"trial-{trial.number:04d}",
            tags={
                "mlflow.parentRunId": parent_id,
                TAG_STUDY: study.study_name,
                TAG_ROLE: _CHILD,
                TAG_TRIAL: str(trial.number),
            },
        )
        run_id = run.info.run_id
        metrics = [Metric(k, v, end, 0) for k, v in _trial_metrics(study, trial).items()]
        for curve, values in (trial.user_attrs.get("history") or {}).items():
            metrics += [Metric(curve, float(v), end, epoch) for epoch, v in enumerate(values) if math.isfinite(v)]
        params = [Param(k, str(v)) for k, v in trial.params.items()]
        tags = [RunTag(k, v) for k, v in _trial_tags(trial).items()]
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(
                run_id, metrics=metrics[i : i + 1000], params=params if i == 0 else (), tags=tags if i == 0 else ()
            )
        client.set_terminated(run_id, _STATUS.get(trial.state.name, "FAILED"), end_time=end)
        return run_id

    def _update_front(self, study: optuna.Study, parent_id: str, step: int) -> None:
        trials = study.get_trials(deepcopy=False)
        ranks = pareto_ranks(trials, study.directions)
        client = self._client
        for number, run in self._child_runs(study, parent_id).items():
            rank = ranks.get(number)
            wanted = {"pareto": str(rank == 0).lower(), "pareto_rank": "" if rank is None else str(rank)}
            for key, value in wanted.items():
                if run.data.tags.get(key) != value:
                    client.set_tag(run.info.run_id, key, value)
        front = [t.values for t in trials if ranks.get(t.number) == 0]
        hypervolume = self._hypervolume(study, front)
        if hypervolume is not None:
            client.log_metric(parent_id, "hypervolume", hypervolume, step=step)

    def _hypervolume(self, study: optuna.Study, front: list[list[float]]) -> float | None:
        """In objective space against ``hypervolume_reference``; for ``(accuracy, latency_ms)``
        studies without one, :func:`tradeoff_hypervolume`'s (error, log10 µs) default."""
        import moocore
        import numpy as np
        import optuna

        if self.hypervolume_reference is not None:
            maximise = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
            return (
                float(
                    moocore.hypervolume(
                        np.array(front).reshape(-1, len(maximise)), ref=self.hypervolume_reference, maximise=maximise
                    )
                )
                if front
                else 0.0
            )
        names = _metric_names(study)
        if len(names) != 2 or "latency_ms" not in names:
            return None
        latency = names.index("latency_ms")
        return tradeoff_hypervolume([(values[1 - latency], values[latency]) for values in front])


def _metric_names(study: optuna.Study) -> list[str]:
    return list(study.metric_names or [f"objective_{i}" for i in range(len(study.directions))])


def _trial_metrics(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if trial.values is not None:
        metrics.update(zip(_metric_names(study), trial.values, strict=True))
    for key, value in trial.user_attrs.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics["params" if key == "n_params" else key] = float(value)
        elif isinstance(value, dict) and key == "latency":
            metrics.update(
                {
                    f"latency_{k}": float(v)
                    for k, v in value.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            )
    for key, value in trial.constraints.items():
        metrics[f"constraint.{key}"] = value
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _trial_tags(trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    tags = {"optuna.state": trial.state.name, "feasible": str(is_feasible(trial)).lower()}
    latency = trial.user_attrs.get("latency")
    if isinstance(latency, dict):
        tags.update(
            {
                f"latency.{k}": str(latency[k])
                for k in ("runtime", "runtime_version", "cpu", "statistic")
                if k in latency
            }
        )
    if "fail_reason" in trial.user_attrs:
        tags["error"] = str(trial.user_attrs["fail_reason"])[:5000]
    return tags


def _millis(moment: Any) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _front_figure(study: optuna.Study) -> Any:
    """Optuna's Pareto-front plot (feasible, infeasible and dominated trials told apart)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna

    names = _metric_names(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = optuna.visualization.matplotlib.plot_pareto_front(study, target_names=names)
    if "latency_ms" in names[:2]:  # latencies span orders of magnitude
        (axes.set_xscale if names.index("latency_ms") == 0 else axes.set_yscale)("log")
    return axes.figure
