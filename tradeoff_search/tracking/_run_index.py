"""Where a study's runs are in MLflow: the experiment, the parent run, the child runs by trial.

One parent run per study, one nested child run per trial. The study's parent run is the one its
storage names (user attribute ``mlflow_parent_run``); a child run is found by tag before one is
created, so resuming, several workers and :meth:`MLflowParetoCallback.sync` never duplicate a
run. Between trials the index keeps the child runs it has seen (id and Pareto tags) and searches
only for runs it has not: a search of every run per trial made the callback's cost grow with the
study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tradeoff_search.front import metric_names
from tradeoff_search.record._keys import PARENT_RUN_ATTR, STUDY_UID_ATTR

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import Run

TAG_STUDY = "optuna.study"
TAG_STUDY_UID = "optuna.study_uid"
TAG_TRIAL = "optuna.trial"
TAG_ROLE = "optuna.role"
PARENT, CHILD = "study", "trial"  # the values of TAG_ROLE
FRONT_TAGS = ("pareto", "pareto_rank")


@dataclasses.dataclass
class ChildRun:
    run_id: str
    front_tags: dict[str, str]  # as last seen in or written to the store


class RunIndex:
    """A study's runs in one MLflow experiment: found, created once, cached.

    Args:
        tracking_uri: MLflow tracking URI (default: MLflow's own resolution).
        experiment: experiment name (default: the study name).
        parent_tags: extra tags for the parent run when it is created.
        parent_artifacts: JSON documents logged on the parent run when it is created, by file name.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment: str | None,
        parent_tags: dict[str, str],
        parent_artifacts: dict[str, dict[str, Any]],
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_tags = parent_tags
        self.parent_artifacts = parent_artifacts
        self.children: dict[int, ChildRun] = {}  # trial number → its run, as last seen
        self._not_found: set[int] = set()  # searched for once; left to the full refresh at the end
        self._client_instance: MlflowClient | None = None
        self._parent_id: str | None = None
        self._experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client_instance is None:
            self._client_instance = tracking_client(self.tracking_uri)
        return self._client_instance

    def experiment_id(self, study: optuna.Study) -> str:
        """The experiment's id, created by whichever worker comes first."""
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            client = self.client
            name = self.experiment or study.study_name
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                self._experiment_id = experiment.experiment_id
            else:
                try:
                    self._experiment_id = client.create_experiment(name)
                except MlflowException:  # another worker created it first
                    created = client.get_experiment_by_name(name)
                    assert created is not None, f"experiment {name!r} neither created nor found"
                    self._experiment_id = created.experiment_id
        return self._experiment_id

    def search(self, study: optuna.Study, filter_string: str) -> list[Run]:
        """Every run of the experiment that ``filter_string`` selects (all pages)."""
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id(study)], filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def parent(self, study: optuna.Study) -> str:
        """The study's parent run: the one the storage names; else created once and named there.

        Found through the storage, not by tag: anyone who can write to the MLflow server can
        make runs with the study's tags, and a study that reuses a deleted study's name must
        not take over its runs.
        """
        if self._parent_id is not None:
            return self._parent_id
        uid = study_uid(study)
        parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
        if parent_id is None or not self._is_parent(study, parent_id, uid):
            created = self._create_parent(study, uid)
            # Without run_study's storage lock, another process may have named one meanwhile.
            parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
            if parent_id is not None and parent_id != created and self._is_parent(study, parent_id, uid):
                self.client.delete_run(created)
            else:
                study.set_user_attr(PARENT_RUN_ATTR, created)
                parent_id = created
        self._parent_id = parent_id
        return parent_id

    def _is_parent(self, study: optuna.Study, run_id: str, uid: str) -> bool:
        """Whether ``run_id`` is a live parent run of this study in our experiment (the record
        may have been rebuilt, or the run deleted)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return (
            run.info.lifecycle_stage == "active"
            and run.info.experiment_id == self.experiment_id(study)
            and run.data.tags.get(TAG_STUDY_UID) == uid
        )

    def _create_parent(self, study: optuna.Study, uid: str) -> str:
        """A new parent run, named after the study; a study reusing the name of another
        recorded in the experiment is told apart by the start of its identity: ``NAME (1a2b3c4d)``."""
        tags = {
            TAG_STUDY: study.study_name,
            TAG_STUDY_UID: uid,
            TAG_ROLE: PARENT,
            "optuna.directions": ",".join(d.name.lower() for d in study.directions),
            "optuna.sampler": str(study.sampler),
            "optuna.metric_names": ",".join(metric_names(study)),
            **self.parent_tags,
        }
        namesakes = f"tags.`{TAG_STUDY}` = {filter_value(study.study_name)} and tags.`{TAG_ROLE}` = '{PARENT}'"
        name = f"{study.study_name} ({uid[:8]})" if self.search(study, namesakes) else study.study_name
        # Starts when the study's first trial did, so it lists before its trials in the UI.
        starts = [m for t in study.get_trials(deepcopy=False) if (m := millis(t.datetime_start)) is not None]
        run = self.client.create_run(
            self.experiment_id(study), start_time=min(starts, default=None), tags=tags, run_name=name
        )
        for file_name, document in self.parent_artifacts.items():
            self.client.log_dict(run.info.run_id, document, file_name)
        return run.info.run_id

    def child_runs(self, study: optuna.Study, started_from: int | None = None) -> dict[int, Run]:
        """The study's trial runs by trial number; only those started at ``started_from`` (ms) or later if given."""
        query = f"tags.`mlflow.parentRunId` = {filter_value(self.parent(study))}"
        if started_from is not None:
            query += f" and attributes.start_time >= {started_from}"
        runs = self.search(study, query)
        return {int(r.data.tags[TAG_TRIAL]): r for r in runs}

    def trial_run(self, study: optuna.Study, number: int) -> str | None:
        """The id of trial ``number``'s run, if one was logged."""
        query = f"tags.`mlflow.parentRunId` = {filter_value(self.parent(study))} and tags.`{TAG_TRIAL}` = '{number}'"
        existing = self.search(study, query)
        return existing[0].info.run_id if existing else None

    def refresh_children(
        self, study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial], everything: bool
    ) -> None:
        """Learn the runs of trials logged by others (other workers, earlier sessions).

        Only completed trials' ranks change later, so only their runs need finding between trials;
        a run is searched for once, from its trial's start, and ``everything`` (at the study's end)
        reads all of them again.
        """
        import optuna

        if everything:
            self.children.clear()
            self._not_found.clear()
            started_from = None
        else:
            unseen = [
                t
                for t in trials
                if t.state == optuna.trial.TrialState.COMPLETE
                and t.number not in self.children
                and t.number not in self._not_found
            ]
            if not unseen:
                return
            started_from = min(millis(t.datetime_start) or 0 for t in unseen)
            self._not_found.update(t.number for t in unseen)
        for number, run in self.child_runs(study, started_from).items():
            tags = {key: run.data.tags[key] for key in FRONT_TAGS if key in run.data.tags}
            self.children[number] = ChildRun(run.info.run_id, tags)
            self._not_found.discard(number)


def tracking_client(tracking_uri: str | None) -> MlflowClient:
    """An MLflow client whose store is created (tables, schema migrations) by one process at a time.

    MLflow migrates a fresh database store when a client first opens it, without a lock: two
    ``run`` commands started together on a fresh ``mlflow.db`` failed with ``table ... already
    exists`` or ``duplicate column name`` in their migrations. The storage-wide lock (a file
    beside a SQLite file, an advisory lock in PostgreSQL; none for a server, which migrates once)
    serialises that; the second process finds the tables and only checks their version. A
    database error there is an ``MlflowException`` naming the store.
    """
    import sqlalchemy.exc
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tradeoff_search.stores import redact, storage_lock

    with storage_lock(tracking_uri or "", "mlflow-store"):
        try:
            return MlflowClient(tracking_uri=tracking_uri)
        except sqlalchemy.exc.SQLAlchemyError as error:  # its tables could not be made (a read-only or full disk)
            raise MlflowException(f"store {redact(tracking_uri or '')}: {error}") from error


def study_uid(study: optuna.Study) -> str:
    """The study's identity (a random UUID kept in the storage), made on first use."""
    uid = study.user_attrs.get(STUDY_UID_ATTR)
    if uid is None:
        uid = uuid.uuid4().hex
        study.set_user_attr(STUDY_UID_ATTR, uid)
    return str(uid)


def millis(moment: Any) -> int | None:
    """A datetime (Optuna's, naive local time) as MLflow's milliseconds since the epoch."""
    return int(moment.timestamp() * 1000) if moment is not None else None


@functools.lru_cache(maxsize=256)
def filter_value(text: str) -> str:
    """``text`` as a string literal of MLflow's search-filter grammar.

    MLflow's filter parser (``SearchUtils``, on sqlparse) strips a literal's outer quotes and
    unescapes nothing, so a backslash or a doubled quote would become part of the value: the
    value goes between a quote character it does not hold, and MLflow's own parser must read
    it back unchanged.

    Raises:
        ValueError: no literal of the grammar holds ``text`` (it has both ``'`` and ``"``).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    for quote in "'\"":
        if quote in text:
            continue
        literal = f"{quote}{text}{quote}"
        with contextlib.suppress(MlflowException):
            parsed = SearchUtils.parse_search_filter(f"tags.t = {literal} and tags.u = 'u'")
            if [p["value"] for p in parsed] == [text, "u"]:
                return literal
    raise ValueError(f"{text!r} cannot be written in an MLflow search filter (it holds both kinds of quotes)")
