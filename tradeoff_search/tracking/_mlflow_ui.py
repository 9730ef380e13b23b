"""The MLflow UI's view of a study, and the URLs that open it.

MLflow 3.17's UI lands on a GenAI overview and shows neither our metrics nor the ``pareto`` tag as
columns. Its runs page takes ``?viewStateShareKey=KEY`` and then applies the view stored in the
experiment tag ``mlflow.sharedViewState.KEY``: columns, grouping and which groups are open. Which
rows are expanded is not part of a shared view (MLflow leaves ``runsExpanded`` out of it), so
the view groups the runs by the ``pareto`` tag instead: every trial run is listed without a
click, the front together, and the study's parent run in the open "Additional runs" group.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

VIEW_KEY = "tradeoff_search"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
_GROUP_TAG = "pareto"
_TAG_COLUMNS = ("pareto", "pareto_rank", "pareto_retimed")


def runs_view(metric_names: Sequence[str]) -> dict[str, object]:
    """The shared view: the objectives and the front's tags as columns, runs grouped by ``pareto``."""
    columns = [f"metrics.`{name}`" for name in metric_names] + [f"tags.`{name}`" for name in _TAG_COLUMNS]
    group = {"mode": "tag", "groupByData": _GROUP_TAG}
    return {
        "selectedColumns": columns,
        "groupBy": {"aggregateFunction": "min", "groupByKeys": [group]},
        # Groups of a value are open by default; the group of runs without the tag (the parent run,
        # failed trials) is keyed by the grouping itself and closed unless set.
        "groupsExpanded": {f"{group['mode']}.{group['groupByData']}": True},
    }


def share_runs_view(client: MlflowClient, experiment_id: str, metric_names: Sequence[str]) -> None:
    """Store the view on the experiment (idempotent: the same tag, rewritten)."""
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(runs_view(metric_names)))


@dataclasses.dataclass(frozen=True)
class StudyPages:
    """Where a study's record opens in the MLflow UI at ``base`` (e.g. ``http://127.0.0.1:5000``)."""

    experiment: str
    runs: str  # the runs page with the view above
    front_plot: str | None  # the parent run's pareto_front.png, once the study has finished


def study_pages(client: MlflowClient, base: str, experiment: str | None = None) -> list[StudyPages]:
    """The pages of ``experiment``, or of every experiment that holds a study, most recent first."""
    from tradeoff_search.tracking._run_index import PARENT, TAG_ROLE

    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        experiments = [found] if found is not None else []
    else:
        experiments = [e for e in client.search_experiments() if VIEW_TAG in e.tags]
    experiments.sort(key=lambda e: e.last_update_time or 0, reverse=True)
    pages = []
    for found in experiments:
        root = f"{base.rstrip('/')}/#/experiments/{found.experiment_id}"
        parents = client.search_runs([found.experiment_id], f"tags.`{TAG_ROLE}` = '{PARENT}'", max_results=1)
        plot = None
        if parents and parents[0].info.status == "FINISHED":
            plot = f"{root}/runs/{parents[0].info.run_id}/artifacts/pareto_front.png"
        pages.append(StudyPages(found.name, f"{root}/runs?viewStateShareKey={VIEW_KEY}", plot))
    return pages
