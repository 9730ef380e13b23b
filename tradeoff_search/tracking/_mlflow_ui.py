"""The MLflow UI's view of a study, and the URLs that open it.

MLflow 3.17's UI lands on a GenAI overview and shows neither our metrics nor the ``pareto`` tag as
columns. Its runs page takes ``?viewStateShareKey=KEY`` and then applies the view stored in the
experiment tag ``mlflow.sharedViewState.KEY``: columns, sort, grouping and which groups are open.
Which rows are expanded is not part of a shared view (MLflow leaves ``runsExpanded`` out of it),
so the view groups the runs by the ``pareto`` tag instead: the front's group first and open (the UI
lists groups in the order of their first run, and the runs come sorted by ``pareto``, ``true``
first), the other trials' group closed below it, and the study's parent run in the open
"Additional runs" group: the whole study on one screen.

Its sidebar is the GenAI one unless the page's address says ``workflowType=machine_learning``
(3.17 reads the address, then the browser's last choice); the experiment tag
``mlflow.experimentKind``, which MLflow 3 sets when a user picks the experiment's kind, records
it too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tradeoff_search.front import MICROSECONDS, LatencyUnit
from tradeoff_search.record._keys import LATENCY_METRIC
from tradeoff_search.tracking._front_plot import FRONT_PAGE

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Experiment

VIEW_KEY = "tradeoff_search"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
_WORKFLOW = "workflowType=machine_learning"  # the query that shows the UI's model-training sidebar
_GROUP_TAG = "pareto"
_TAG_COLUMNS = ("pareto", "pareto_rank", "pareto_retimed")


def runs_view(metric_names: Sequence[str], latency: LatencyUnit = MICROSECONDS) -> dict[str, object]:
    """The shared view: the objectives (``latency_ms`` as the metric in ``latency``'s unit) and the
    front's tags as columns, runs sorted and grouped by ``pareto``, the front first."""
    shown = [latency.metric if name == LATENCY_METRIC else name for name in metric_names]
    columns = [f"metrics.`{name}`" for name in shown] + [f"tags.`{name}`" for name in _TAG_COLUMNS]
    group = f"tag.{_GROUP_TAG}"  # a group's id: mode.key, then .value for a group of a value
    return {
        "selectedColumns": columns,
        "orderByKey": f"tags.`{_GROUP_TAG}`",
        "orderByAsc": False,
        "groupBy": {"aggregateFunction": "min", "groupByKeys": [{"mode": "tag", "groupByData": _GROUP_TAG}]},
        # Groups of a value are open unless set; that of runs without the tag (the parent run) is
        # keyed by the grouping itself and closed unless set.
        "groupsExpanded": {f"{group}.false": False, group: True},
    }


def share_runs_view(
    client: MlflowClient, experiment_id: str, metric_names: Sequence[str], latency: LatencyUnit = MICROSECONDS
) -> None:
    """Store the view on the experiment and mark it a model-training one (idempotent: the same tags,
    rewritten): the study's start stores it with latencies in µs, its end in the unit of its front."""
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(runs_view(metric_names, latency)))
    client.set_experiment_tag(experiment_id, KIND_TAG, MODEL_TRAINING)


@dataclasses.dataclass(frozen=True)
class StudyPages:
    """Where a study's record opens in the MLflow UI at ``base`` (e.g. ``http://127.0.0.1:5000``)."""

    experiment: str
    runs: str  # the runs page with the view above
    front_plot: str | None  # the parent run's pareto_front.html (else .png), once the study has finished
    models: str | None  # the Models view, once the study has logged a model there


def study_pages(client: MlflowClient, base: str, experiment: str | None = None) -> list[StudyPages]:
    """The pages of ``experiment``, or of every experiment that holds a study, most recent first."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        experiments = [found] if found is not None else []
    else:
        experiments = [e for e in client.search_experiments() if VIEW_TAG in e.tags]
    experiments.sort(key=lambda e: e.last_update_time or 0, reverse=True)
    return [_pages(client, base, found) for found in experiments]


def _pages(client: MlflowClient, base: str, experiment: Experiment) -> StudyPages:
    from tradeoff_search.tracking._run_index import PARENT, TAG_ROLE

    root = f"{base.rstrip('/')}/#/experiments/{experiment.experiment_id}"
    parents = client.search_runs([experiment.experiment_id], f"tags.`{TAG_ROLE}` = '{PARENT}'", max_results=1)
    plot = None
    if parents and parents[0].info.status == "FINISHED":
        run_id = parents[0].info.run_id
        page = FRONT_PAGE if FRONT_PAGE in {a.path for a in client.list_artifacts(run_id)} else "pareto_front.png"
        plot = f"{root}/runs/{run_id}/artifacts/{page}?{_WORKFLOW}"
    logged = client.search_logged_models([experiment.experiment_id], max_results=1)
    models = f"{root}/models?{_WORKFLOW}" if logged else None
    return StudyPages(experiment.name, f"{root}/runs?viewStateShareKey={VIEW_KEY}&{_WORKFLOW}", plot, models)
