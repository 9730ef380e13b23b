"""The repair of a study's MLflow record against its Optuna storage (``sync``), and the check of
what it still lacks (``missing``)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tradeoff_search.front import Front
from tradeoff_search.process import process_identity
from tradeoff_search.record._keys import FINISHED_ATTR, MODEL_DIGESTS_ATTR, WORKER_ATTR, WORKER_PROCESS_ATTR
from tradeoff_search.tracking._logged_models import logged_models
from tradeoff_search.tracking._run_index import FRONT_TAGS, RunIndex, study_uid
from tradeoff_search.tracking._trial_runs import RUN_FILES, TrialRuns
from tradeoff_search.trial._staging import drop_provisional, holds_recorded, remove_staged

if TYPE_CHECKING:
    import optuna
    from mlflow.entities import Run


@dataclasses.dataclass
class SyncReport:
    """What :meth:`MLflowParetoCallback.sync` did, by trial number."""

    logged: list[int] = dataclasses.field(default_factory=list)  # runs logged (missing or half-written)
    half_written: list[int] = dataclasses.field(default_factory=list)  # RUNNING runs deleted and logged again
    models: list[int] = dataclasses.field(default_factory=list)  # staged models logged
    discarded: list[int] = dataclasses.field(default_factory=list)  # staged files unlike the trial's digests, removed
    # The trial of each leftover staging folder removed: its own, whose model its run held already, and its variants'
    leftovers: list[int] = dataclasses.field(default_factory=list)
    pending: list[int] = dataclasses.field(default_factory=list)  # RUNNING runs of trials finished just now
    listed: list[int] = dataclasses.field(default_factory=list)  # runs' models added to MLflow's Models view

    def __str__(self) -> str:
        folders = len(self.leftovers)
        parts = [f"{what} (trials {', '.join(map(str, numbers))})" for what, numbers in (
            ("logged missing runs", sorted(set(self.logged) - set(self.half_written))),
            ("finished half-written runs", self.half_written),
            ("logged staged models", self.models),
            ("discarded staged files that did not match their trial's recorded digests", self.discarded),
            (f"removed {folders} leftover staging folder{'s' * (folders != 1)}", sorted(set(self.leftovers))),
            ("left runs still being written, run sync again in a few minutes", self.pending),
            ("added the front's models to MLflow's Models view from their runs", self.listed),
        ) if numbers]  # fmt: skip
        return "; ".join(parts) or "nothing to repair"


class IntegrityError(RuntimeError):
    """The MLflow record does not hold what the Optuna storage says the study produced."""


class RecordIncomplete(IntegrityError):
    """The MLflow record still lacks part of a study after :meth:`MLflowParetoCallback.sync`
    (see :meth:`MLflowParetoCallback.missing`); the message says what and how to complete it."""


class RecordRepair:
    """Brings a study's runs in line with its finished trials (see :meth:`MLflowParetoCallback.sync`)."""

    def __init__(self, runs: RunIndex, trial_runs: TrialRuns) -> None:
        self.runs = runs
        self.trial_runs = trial_runs

    def sync(self, study: optuna.Study, parent_id: str, grace_seconds: float) -> SyncReport:
        """Log or finish the run of each finished trial, with its staged model; remove staged leftovers."""
        import optuna

        logged = self.runs.child_runs(study)
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
        report = SyncReport()
        grace, now = datetime.timedelta(seconds=grace_seconds), datetime.datetime.now(datetime.UTC)
        for trial in study.get_trials(deepcopy=False, states=finished):
            aged = now - finished_at(trial) >= grace
            settled = aged or may_be_writing(trial) is False
            self._repair(study, trial, logged.get(trial.number), parent_id, settled, report)
        report.listed = self._list_models(study, logged)
        return report

    def _list_models(self, study: optuna.Study, runs: Mapping[int, Run]) -> list[int]:
        """Add the logged model of each front trial whose run holds its model without one (a
        record written before the Models view held them), from the run's own files; their trials."""
        front, client = Front.of(study), self.runs.client
        uid, experiment_id = study_uid(study), self.runs.experiment_id(study)
        listed = {model.source_run_id for model in logged_models(client, experiment_id, uid)}
        added = []
        for trial in sorted(front.best_trials, key=lambda trial: trial.number):  # the report's order
            run = runs.get(trial.number)
            if run is None or run.info.status == "RUNNING" or run.info.run_id in listed:
                continue  # no run yet, or written by the repair above with its logged model
            if not (self.trial_runs.wants_model(trial, front) and self.trial_runs.has_model(run.info.run_id)):
                continue
            with tempfile.TemporaryDirectory() as folder:
                flavor = client.download_artifacts(run.info.run_id, "model", folder)
                tflite = client.download_artifacts(run.info.run_id, RUN_FILES["model.tflite"], folder)
                self.trial_runs.log_logged_model(study, run.info.run_id, trial, (Path(flavor), Path(tflite)))
            added.append(trial.number)
        return added

    def _repair(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        run: Run | None,
        parent_id: str,
        settled: bool,
        report: SyncReport,
    ) -> None:
        """Repair one finished trial's run (``settled``: its worker is done with it), noted in ``report``."""
        model_dir = self.trial_runs.model_dir
        if settled and model_dir is not None:  # variants it staged and did not add never will be
            report.leftovers += [trial.number] * drop_provisional(model_dir, trial.number)
        staged = holds_recorded(model_dir, trial) if settled and model_dir is not None else None
        if staged is False:  # not what the trial recorded: never logged, removed below
            report.discarded.append(trial.number)
        loggable = staged is True and self.trial_runs.log_models != "none"
        if run is not None and run.info.status == "RUNNING":
            if not settled:
                report.pending.append(trial.number)
                return
            self.runs.client.delete_run(run.info.run_id)
            report.half_written.append(trial.number)
            run = None
        if run is None:
            self.trial_runs.log(study, trial, parent_id, with_model=loggable)
            report.logged.append(trial.number)
        elif loggable and not self.trial_runs.has_model(run.info.run_id):
            self.trial_runs.log_model(study, run.info.run_id, trial)
        else:
            loggable = False
        if loggable:
            report.models.append(trial.number)
        elif staged:  # its run holds that model already (or log_models is "none")
            report.leftovers.append(trial.number)
        if settled and model_dir is not None:  # what it staged is logged now, or its run holds it already
            remove_staged(model_dir, trial.number)

    def missing(self, study: optuna.Study, parent_id: str, front: Front) -> dict[str, list[int]]:
        """What the record lacks of ``study`` (see :meth:`MLflowParetoCallback.missing`)."""
        import optuna

        missing: dict[str, list[int]] = {}
        if self.runs.client.get_run(parent_id).info.status != "FINISHED":
            missing["the study's run unfinished"] = []
        runs, names = self.runs.child_runs(study), set(front.metric_names)
        for trial in front.trials:
            if trial.state != optuna.trial.TrialState.COMPLETE:
                continue
            run = runs.get(trial.number)
            if run is None:
                lacks = ["no run"]
            else:
                front_tag = run.data.tags.get(FRONT_TAGS[0]) == str(front.ranks.get(trial.number) == 0).lower()
                lacks = [what for what, lacking in (
                    ("an unfinished run", run.info.status != "FINISHED" or not names <= run.data.metrics.keys()),
                    ("an outdated pareto tag", not front_tag),
                    ("no model", MODEL_DIGESTS_ATTR in trial.user_attrs and self.trial_runs.wants_model(trial, front)
                     and not self.trial_runs.has_model(run.info.run_id)),
                ) if lacking]  # fmt: skip
            for what in lacks:
                missing.setdefault(what, []).append(trial.number)
        return missing


def finished_at(trial: optuna.trial.FrozenTrial) -> datetime.datetime:
    """When ``trial`` finished, in UTC: as its worker recorded it (``FINISHED_ATTR``), else
    Optuna's ``datetime_complete``, the naive local time of the machine that told it, read as this
    machine's (a trial told before #33)."""
    recorded = trial.system_attrs.get(FINISHED_ATTR)
    if recorded is not None:
        return datetime.datetime.fromisoformat(recorded)
    if trial.datetime_complete is None:
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return trial.datetime_complete.astimezone(datetime.UTC)


def may_be_writing(trial: optuna.trial.FrozenTrial) -> bool | None:
    """Whether the process that ran ``trial`` may still be writing its run: True if it runs on
    this machine, False if it has ended or is this process (which is not logging, since it asks),
    None if nobody can tell (another machine, or no worker recorded).

    Its ``host:pid`` alone is not who it is: another machine may have the same name, and a pid is
    handed out again. With its boot id and start time recorded (``WORKER_PROCESS_ATTR``), a worker
    of another boot is another machine's (or gone) and a live pid started at another time is
    another process."""
    host, _, pid = str(trial.system_attrs.get(WORKER_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    recorded, mine = trial.system_attrs.get(WORKER_PROCESS_ATTR), process_identity()
    if recorded is not None and mine is not None and recorded.split()[0] != mine.split()[0]:
        return None
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    now = process_identity(int(pid))
    return recorded is None or now is None or now == recorded
