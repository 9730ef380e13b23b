"""MLflow as the browsable record of a multi-objective study: a projection of the Optuna storage.

One parent run per study, one nested child run per trial, the Pareto set tagged live. The
callback composes the run index (:class:`~tradeoff_search.tracking._run_index.RunIndex`: where the study's
runs are, found before one is created, cached between trials) and the end-of-study report
(``_report``); what it adds is logging a trial, the Pareto tags and the hypervolume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tradeoff_search.front import Front, default_reference, is_feasible, metric_names
from tradeoff_search.record._keys import (
    CALIBRATION_ATTR,
    CONVERSION_WARNINGS,
    FAIL_REASON,
    HISTORY,
    LATENCY,
    MODEL_DIGESTS_ATTR,
    N_PARAMS,
    PARAMS_METRIC,
    PRUNE_REASON,
    RETIMED_METRIC,
    TRACEBACK,
    TRAINED,
    VARIANT_OF,
    WORKER_ATTR,
)
from tradeoff_search.rules import spec_rule
from tradeoff_search.spec._sections import TrackingSection
from tradeoff_search.spec._validation import validate_params
from tradeoff_search.tracking._mlflow_ui import share_runs_view
from tradeoff_search.tracking._report import front_csv, param_importances, report_figures
from tradeoff_search.tracking._run_index import (
    CHILD,
    FRONT_TAGS,
    TAG_ROLE,
    TAG_STUDY,
    TAG_STUDY_UID,
    TAG_TRIAL,
    ChildRun,
    RunIndex,
    millis,
    study_uid,
)
from tradeoff_search.trial._staging import (
    drop_provisional,
    holds_recorded,
    remove_staged,
    staged_model_path,
    trial_dir,
)

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
_BATCH = 1000  # MLflow's limit of metrics per log_batch
TAG_TRAINING = "training"  # a trained trial's run and its variants' (see _variants): the trained trial's number


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

    def __str__(self) -> str:
        folders = len(self.leftovers)
        parts = [f"{what} (trials {', '.join(map(str, numbers))})" for what, numbers in (
            ("logged missing runs", sorted(set(self.logged) - set(self.half_written))),
            ("finished half-written runs", self.half_written),
            ("logged staged models", self.models),
            ("discarded staged files that did not match their trial's recorded digests", self.discarded),
            (f"removed {folders} leftover staging folder{'s' * (folders != 1)}", sorted(set(self.leftovers))),
            ("left runs still being written, run sync again in a few minutes", self.pending),
        ) if numbers]  # fmt: skip
        return "; ".join(parts) or "nothing to repair"


class IntegrityError(RuntimeError):
    """The MLflow record does not hold what the Optuna storage says the study produced."""


class RecordIncomplete(IntegrityError):
    """The MLflow record still lacks part of a study after :meth:`MLflowParetoCallback.sync`
    (see :meth:`MLflowParetoCallback.missing`); the message says what and how to complete it."""


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
        callback.finish(study)  # pareto.csv, plots and importances on the parent run

    Layout:

    - the parent run, named after the study (``NAME (1a2b3c4d)`` for a study reusing the name of
      another in the experiment), whose id the study keeps (user attribute
      ``mlflow_parent_run``: the storage, not a tag search, says which run is the study's),
      tagged with its name, identity (``optuna.study_uid``), directions, sampler and metric
      names; the metric ``hypervolume`` (step = trial number); after :meth:`finish`,
      ``pareto.csv``, ``pareto_front.png``, ``hypervolume.png`` and ``param_importances.json``/``.png``
      (which hyperparameters decide each objective, over the feasible trials);
    - one nested run per trial, ``trial-0007``: params, objective values under their names, every
      number in the trial's user attributes (``latency`` statistics flattened to
      ``latency_p10_ms``, …), constraint values as ``constraint.NAME``, ``history`` curves as
      stepped metrics (step = epoch), the tags ``pareto`` (``true``/``false``), ``pareto_rank``
      (0 on the front; ``infeasible`` or ``none`` when it has none; ``pareto`` and rank 0 follow
      the front as trials finish, a rank below it is the one its trial had when it finished or
      last left the front until :meth:`finish` brings every rank up to date), ``feasible``,
      ``optuna.state``, ``error`` and ``pruned_reason`` (the ``fail_reason``/``prune_reason``
      user attributes, which the objective and the worker loop set); a failed trial's
      ``traceback`` user attribute as ``traceback.txt``;
    - run states follow trial states: COMPLETE → FINISHED, FAIL → FAILED, PRUNED → KILLED.

    Args:
        tracking_uri: MLflow tracking URI (default: MLflow's own resolution).
        experiment: experiment name (default: the study name).
        hypervolume_reference: reference point of the ``hypervolume`` metric, in objective units;
            objectives named ``latency_ms`` are compared on a log scale. Default for
            ``(accuracy, latency_ms)`` studies: accuracy 0 and 100 ms; other studies without one
            log no hypervolume.
        log_models: ``"pareto"`` (models of trials that reach the front when they finish),
            ``"all"`` or ``"none"``. Models are read from ``model_dir/trial-NNNN/`` (``model.keras``
            and ``model.tflite``, as :func:`stage_model` writes them for
            :class:`~tradeoff_search.TradeoffObjective`), logged only if their sha256 are those
            the trial recorded, as ``model`` (MLflow's Keras flavor holding that very
            ``model.keras``: ``mlflow.keras.load_model("runs:/RUN_ID/model")``) and
            ``tflite/model.tflite``, then removed from ``model_dir``.
        model_dir: where the objective saves each trial's model.
        parent_tags: extra tags for the parent run (e.g. the spec hash).
        parent_artifacts: JSON documents logged on the parent run when it is created, by file name.
        custom_objects: your own Keras classes by name, to load a staged model of your layers
            for logging (``keras.saving.load_model``'s ``custom_objects``; see
            :func:`~tradeoff_search.space._builders.keras_classes`).
    """

    @validate_params(log_models=spec_rule(TrackingSection, "log_models"))
    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        *,
        hypervolume_reference: Sequence[float] | None = None,
        log_models: str = "none",
        model_dir: str | Path | None = None,
        parent_tags: dict[str, str] | None = None,
        parent_artifacts: dict[str, dict[str, Any]] | None = None,
        custom_objects: Mapping[str, type] | None = None,
    ) -> None:
        if tracking_uri is not None and urlsplit(tracking_uri).scheme in ("", "file"):  # MLflow 3.17 refuses these
            raise ValueError(f"tracking_uri={tracking_uri!r}: expected a database or server URI, "
                             "such as sqlite:///mlruns/mlflow.db")  # fmt: skip
        if log_models != "none" and model_dir is None:
            raise ValueError(f"log_models={log_models!r} needs model_dir, where the objective saves models")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.hypervolume_reference = list(hypervolume_reference) if hypervolume_reference is not None else None
        self.log_models = log_models
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.parent_tags = dict(parent_tags or {})
        self.parent_artifacts = dict(parent_artifacts or {})
        self.custom_objects = dict(custom_objects or {})
        self._runs = RunIndex(tracking_uri, experiment, self.parent_tags, self.parent_artifacts)
        self._study_name: str | None = None

    def _check(self, study: optuna.Study) -> None:
        """One callback records one multi-objective study (it keeps that study's runs)."""
        if len(study.directions) < 2:
            raise ValueError(f"study {study.study_name!r}: expected a multi-objective study, got 1 objective")
        if self._study_name is None:
            self._study_name = study.study_name
        elif study.study_name != self._study_name:
            raise ValueError(f"study {study.study_name!r}: this callback records study {self._study_name!r}; "
                             "make one callback per study")  # fmt: skip
        reference = self.hypervolume_reference
        if reference is not None and len(reference) != len(study.directions):
            raise ValueError(f"hypervolume_reference={reference}: expected one number for each of the "
                             f"{len(study.directions)} objectives")  # fmt: skip

    # ------------------------------------------------------------------ Optuna callback
    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        parent_id = self._parent(study)
        front = Front.of(study)
        # The trial, and the variants of its model a TradeoffObjective added (see _variants) before this callback
        variants = [t for t in front.trials if t.user_attrs.get(VARIANT_OF) == trial.number]
        for logged in (trial, *variants):
            tags = _front_tags(logged, front.ranks.get(logged.number))  # written as the run is created
            child = self._log_trial(study, logged, parent_id, self._wants_model(logged, front), tags)
            self._runs.children.setdefault(logged.number, child)
            if self.model_dir is not None:
                remove_staged(self.model_dir, logged.number)
        step = max(t.number for t in (trial, *variants))
        self._update_front(study, parent_id, front, step=step, refresh=False)

    def start(self, study: optuna.Study) -> None:
        """Create the store, the experiment and the study's parent run now, rather than at the
        first finished trial: worker processes started together would race to create a fresh
        SQLite store's tables. Also stores the MLflow UI's view of the study's runs."""
        self._parent(study)
        share_runs_view(self._runs.client, self._runs.experiment_id(study), metric_names(study))

    def sync(self, study: optuna.Study, grace_seconds: float = 300) -> SyncReport:
        """Make the MLflow record match the storage, then :meth:`finish`; returns what it repaired.

        Logs a run for each finished trial without one. A run still RUNNING ``grace_seconds``
        after its trial finished, or once the process that ran the trial has ended (known on its
        own machine), was half-written (its worker died between MLflow calls): it is
        deleted and logged again. A model still staged for such a trial (its files as the trial
        recorded them) is logged with it, or added to a run that lacks one; its staging folder is
        then removed, as is one its run already holds the model of (its worker was killed between
        logging the model and removing its staged copies), one whose files are not those the trial
        recorded (never logged; the report names them), and the files its quantization variants
        staged and never were added with (see ``_variants``); the report counts the leftover
        folders it removed. Idempotent: running it twice changes nothing.
        """
        import optuna

        parent_id = self._parent(study)
        logged = self._runs.child_runs(study)
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
        report = SyncReport()
        now = time.time() * 1000  # as _millis reads Optuna's naive local times
        for trial in study.get_trials(deepcopy=False, states=finished):
            run = logged.get(trial.number)
            aged = now - (millis(trial.datetime_complete) or 0) >= 1000 * grace_seconds
            settled = aged or may_be_writing(trial) is False
            if settled and self.model_dir is not None:  # variants it staged and did not add never will be
                report.leftovers += [trial.number] * drop_provisional(self.model_dir, trial.number)
            staged = holds_recorded(self.model_dir, trial) if settled and self.model_dir is not None else None
            if staged is False:  # not what the trial recorded: never logged, removed below
                report.discarded.append(trial.number)
            loggable = staged is True and self.log_models != "none"
            if run is not None and run.info.status == "RUNNING":
                if not settled:
                    report.pending.append(trial.number)
                    continue
                self._runs.client.delete_run(run.info.run_id)
                report.half_written.append(trial.number)
                run = None
            if run is None:
                self._log_trial(study, trial, parent_id, with_model=loggable)
                report.logged.append(trial.number)
            elif loggable and not self._has_model(run.info.run_id):
                self._log_model(run.info.run_id, trial)
            else:
                loggable = False
            if loggable:
                report.models.append(trial.number)
            elif staged:  # its run holds that model already (or log_models is "none")
                report.leftovers.append(trial.number)
            if settled and self.model_dir is not None:  # what it staged is logged now, or its run holds it already
                remove_staged(self.model_dir, trial.number)
        self.finish(study)
        return report

    def missing(self, study: optuna.Study) -> dict[str, list[int]]:
        """What the MLflow record lacks of ``study``, by what and trial numbers (empty: complete).

        Complete means: the parent run finished (else an entry without trials), and every COMPLETE trial
        has a finished run with its objectives' metrics, the Pareto tag the storage's front gives
        it and, where ``log_models`` asks for it and the trial produced one, its model.
        """
        import optuna

        missing: dict[str, list[int]] = {}
        if self._runs.client.get_run(self._parent(study)).info.status != "FINISHED":
            missing["the study's run unfinished"] = []
        front = Front.of(study)
        runs, names = self._runs.child_runs(study), set(front.metric_names)
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
                    ("no model", MODEL_DIGESTS_ATTR in trial.user_attrs and self._wants_model(trial, front)
                     and not self._has_model(run.info.run_id)),
                ) if lacking]  # fmt: skip
            for what in lacks:
                missing.setdefault(what, []).append(trial.number)
        return missing

    def _has_model(self, run_id: str) -> bool:
        folders = {path.partition("/")[0] for path in RUN_FILES.values()}
        return folders <= {artifact.path for artifact in self._runs.client.list_artifacts(run_id)}

    def finish(self, study: optuna.Study) -> None:
        """Refresh the Pareto tags; log the front, plots and importances; close the parent run."""
        import matplotlib.pyplot as plt

        parent_id = self._parent(study)
        front = Front.of(study)
        self._update_front(study, parent_id, front, step=max((t.number for t in front.trials), default=0), refresh=True)
        client = self._runs.client
        self._log_device(study, parent_id)
        self._log_retimed(parent_id, front)
        client.log_text(parent_id, front_csv(front), "pareto.csv")
        importances = param_importances(study)
        if importances:
            client.log_dict(parent_id, importances, "param_importances.json")
        figures = report_figures(study, front, self._reference(front), importances)
        for name, figure in figures.items():
            client.log_figure(parent_id, figure, name)
            plt.close(figure)  # pyplot's, when it made it (the front plot); nothing for the others
        share_runs_view(client, self._runs.experiment_id(study), front.metric_names)
        client.set_terminated(parent_id, "FINISHED")

    # ------------------------------------------------------------------ runs
    def _log_device(self, study: optuna.Study, parent_id: str) -> None:
        """Tag the parent run with what the study's latencies were timed on (its calibration's
        device: ``local`` or a latency server's URL, and that machine's fingerprint)."""
        calibration = study.user_attrs.get(CALIBRATION_ATTR)
        if isinstance(calibration, dict):
            keys = ("device", "cpu", "logical_cores", "runtime_version")
            self._set_tags(parent_id, {f"latency.{key}": str(calibration[key]) for key in keys if key in calibration})

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set tags that another process of the same study may be setting at the same moment (the
        parent run's as two commands finish, a child's front tags as two workers finish trials):
        MLflow's SQL store inserts a tag it did not find, so two first writers collide
        (``UNIQUE constraint failed: tags.key, tags.run_uuid``), and the loser finds the winner's
        tag in place (for several tags, ``log_batch``'s SQL store retries such a collision itself).
        Both values come from the storage's front; the record check at the end of ``run`` (and
        ``sync``) sets the last word."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        client = self._runs.client
        try:
            if len(tags) == 1:  # on a database store set_tag costs 2/3 of a log_batch, which reads the run 3 times
                client.set_tag(run_id, *next(iter(tags.items())))
            else:  # one write for them all
                client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
        except MlflowException:
            if not tags.keys() <= client.get_run(run_id).data.tags.keys():
                raise

    def _parent(self, study: optuna.Study) -> str:
        """The study's parent run (see :meth:`RunIndex.parent`)."""
        self._check(study)
        return self._runs.parent(study)

    def _log_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        parent_id: str,
        with_model: bool,
        front_tags: Mapping[str, str] | None = None,
    ) -> ChildRun:
        """Log ``trial``'s run unless it has one, in as few writes as MLflow allows: created with
        all its tags (``front_tags``, its Pareto tags, among them when given), its params and
        metrics in one batch, its model and traceback, then ended in the trial's state. Until that
        last write the run is RUNNING, which is how :meth:`sync` and :meth:`missing` tell a run
        its worker did not finish."""
        from mlflow.entities import Metric, Param

        client = self._runs.client
        existing = self._runs.trial_run(study, trial.number)
        if existing is not None:
            return ChildRun(existing, {})  # its Pareto tags are unknown here: the front's update writes them
        start = millis(trial.datetime_start)
        end = millis(trial.datetime_complete) or start or 0  # a finished trial has both
        tags = {"mlflow.parentRunId": parent_id, TAG_STUDY: study.study_name, TAG_ROLE: CHILD,
                TAG_STUDY_UID: study_uid(study), TAG_TRIAL: str(trial.number)}  # fmt: skip
        front = dict(front_tags or {})
        run = client.create_run(
            self._runs.experiment_id(study),
            start_time=start,
            run_name=f"trial-{trial.number:04d}",
            tags={**tags, **_trial_tags(trial), **front},
        )
        run_id = run.info.run_id
        metrics = [Metric(k, v, end, 0) for k, v in _trial_metrics(metric_names(study), trial).items()]
        for curve, values in (trial.user_attrs.get(HISTORY) or {}).items():
            metrics += [Metric(curve, float(v), end, epoch) for epoch, v in enumerate(values) if math.isfinite(v)]
        params = [Param(k, str(v)) for k, v in trial.params.items()]
        for i in range(0, max(len(metrics), 1), _BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + _BATCH], params=params if i == 0 else ())
        if with_model and self.model_dir is not None:
            self._log_model(run_id, trial)
        if TRACEBACK in trial.user_attrs:
            client.log_text(run_id, str(trial.user_attrs[TRACEBACK]), "traceback.txt")
        client.set_terminated(run_id, _STATUS.get(trial.state.name, "FAILED"), end_time=end)
        return ChildRun(run_id, front)

    def _wants_model(self, trial: optuna.trial.FrozenTrial, front: Front) -> bool:
        # A trial off the front when it finishes stays off it: later trials can only dominate it.
        return self.log_models == "all" or (self.log_models == "pareto" and front.ranks.get(trial.number) == 0)

    def _log_model(self, run_id: str, trial: optuna.trial.FrozenTrial) -> None:
        """Log the trial's staged files, if they are what the trial recorded (see :func:`stage_model`):
        ``model`` (MLflow's Keras flavor, with signature, holding the staged ``model.keras``
        itself) and ``tflite/model.tflite``."""
        assert self.model_dir is not None
        held = holds_recorded(self.model_dir, trial)
        if held is False:
            _logger.warning("trial %d: staged model files differ from their recorded digests; not logged", trial.number)
        if not held:
            return
        import keras
        import mlflow.keras

        # save_model + log_artifacts, not log_model: log_model only logs to the fluent API's
        # global active run and tracking URI, which are the user's, not ours to change.
        model = keras.saving.load_model(
            staged_model_path(self.model_dir, trial.number),
            custom_objects=self.custom_objects,
            compile=False,
            safe_mode=True,
        )
        directory = trial_dir(self.model_dir, trial.number)
        flavor_dir = directory / "mlflow_model"
        shutil.rmtree(flavor_dir, ignore_errors=True)
        mlflow.keras.save_model(
            model, str(flavor_dir), signature=_signature(model), pip_requirements=_pip_requirements()
        )
        # The flavor saved the model again (a .keras holds its save time): keep the digested bytes.
        shutil.copyfile(directory / "model.keras", flavor_dir / FLAVOR_KERAS_FILE)
        self._runs.client.log_artifacts(run_id, str(flavor_dir), "model")
        self._runs.client.log_artifact(run_id, str(directory / "model.tflite"), "tflite")

    def _update_front(self, study: optuna.Study, parent_id: str, front: Front, step: int, refresh: bool) -> None:
        client = self._runs.client
        by_number = {t.number: t for t in front.trials}
        self._runs.refresh_children(study, front.trials, everything=refresh)
        for number, child in self._runs.children.items():
            wanted = _front_tags(by_number.get(number), front.ranks.get(number))
            changed = {key: value for key, value in wanted.items() if child.front_tags.get(key) != value}
            # Live (every worker keeps them): a run's tags as it joins or leaves the front. Ranks
            # below the front shift with most new trials (~10 runs a trial after 400): finish() writes them.
            if changed and (refresh or FRONT_TAGS[0] in changed):
                self._set_tags(child.run_id, changed)
                child.front_tags.update(changed)
        reference = self._reference(front)
        if reference is not None:
            client.log_metric(parent_id, "hypervolume", front.hypervolume(reference), step=step)

    def _log_retimed(self, parent_id: str, front: Front) -> None:
        """Latencies of the front re-timed side by side (see ``retime_front``), when the study has them."""
        if not front.retimed:
            return
        for number, value in front.retimed.items():
            child = self._runs.children.get(number)  # finish() has just read every run
            if child is not None:
                self._runs.client.log_metric(child.run_id, RETIMED_METRIC, value)
                self._runs.client.set_tag(child.run_id, "pareto_retimed", str(number in front.retimed_front).lower())
        self._set_tags(parent_id, {"pareto_retimed_size": str(len(front.retimed_front))})

    def _reference(self, front: Front) -> list[float] | None:
        return self.hypervolume_reference or default_reference(front.metric_names)


# ---------------------------------------------------------------------- gathering
def _trial_metrics(names: Sequence[str], trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if trial.values is not None:
        metrics.update(zip(names, trial.values, strict=True))
    for key, value in trial.user_attrs.items():
        if _is_number(value) and key != VARIANT_OF:  # a trial number: a tag
            metrics[PARAMS_METRIC if key == N_PARAMS else key] = float(value)
        elif key == LATENCY and isinstance(value, dict):
            metrics.update({f"latency_{k}": float(v) for k, v in value.items() if _is_number(v)})
    metrics.update({f"constraint.{key}": value for key, value in trial.constraints.items()})
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _front_tags(trial: optuna.trial.FrozenTrial | None, rank: int | None) -> dict[str, str]:
    """A run's Pareto tags (see :data:`FRONT_TAGS`) from its trial's rank in the front."""
    if rank is not None:
        shown = str(rank)
    elif trial is not None and trial.values is not None and not is_feasible(trial):
        shown = "infeasible"
    else:
        shown = "none"
    return dict(zip(FRONT_TAGS, (str(rank == 0).lower(), shown), strict=True))


def _trial_tags(trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    tags = {"optuna.state": trial.state.name, "feasible": str(is_feasible(trial)).lower()}
    latency = trial.user_attrs.get(LATENCY)
    if isinstance(latency, dict):
        described = ("runtime", "runtime_version", "cpu", "statistic", "device")
        tags.update({f"latency.{k}": str(latency[k]) for k in described if k in latency})
    if FAIL_REASON in trial.user_attrs:
        tags["error"] = str(trial.user_attrs[FAIL_REASON])[:5000]
    if PRUNE_REASON in trial.user_attrs:
        tags["pruned_reason"] = str(trial.user_attrs[PRUNE_REASON])[:5000]
    if trial.user_attrs.get(CONVERSION_WARNINGS):
        tags[CONVERSION_WARNINGS] = " | ".join(trial.user_attrs[CONVERSION_WARNINGS])[:5000]
    if VARIANT_OF in trial.user_attrs:
        tags[VARIANT_OF] = str(trial.user_attrs[VARIANT_OF])
    if trial.user_attrs.get(TRAINED):  # the runs of one training (a trial and its variants) share it
        tags[TAG_TRAINING] = str(trial.user_attrs.get(VARIANT_OF, trial.number))
    return tags


def may_be_writing(trial: optuna.trial.FrozenTrial) -> bool | None:
    """Whether the process that ran ``trial`` (its ``host:pid``) may still be writing its run:
    True if it runs on this machine, False if it has ended or is this process (which is not
    logging, since it asks), None if nobody can tell (another machine, or no worker recorded)."""
    host, _, pid = str(trial.system_attrs.get(WORKER_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Where the Keras flavor keeps the model, and where the LiteRT file goes, in a trial's run.
FLAVOR_KERAS_FILE = "data/model.keras"
RUN_FILES = {"model.keras": f"model/{FLAVOR_KERAS_FILE}", "model.tflite": "tflite/model.tflite"}


def _signature(model: Any) -> Any:
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(shape: tuple[Any, ...]) -> Schema:
        return Schema([TensorSpec(np.dtype(np.float32), (-1, *shape[1:]))])

    return ModelSignature(inputs=spec(model.input_shape), outputs=spec(model.output_shape))


def _pip_requirements() -> list[str]:
    """Pinned requirements, so MLflow does not spend seconds inferring them per model."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for names in (("tensorflow-cpu", "tensorflow"), ("keras",)):
        for name in names:
            with contextlib.suppress(PackageNotFoundError):
                requirements.append(f"{name}=={version(name)}")
                break
    return requirements
