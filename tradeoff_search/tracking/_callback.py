"""MLflow as the browsable record of a multi-objective study: a projection of the Optuna storage.

One parent run per study, one nested child run per trial, the Pareto set tagged live.
:class:`MLflowParetoCallback` is the front door to units of one job each, all handed the one
:class:`~tradeoff_search.front.Front` computed per change: the run index (``_run_index``: where
the study's runs are), the trial run writer (``_trial_runs``), the front tagger (``_front_tags``),
the repair (``_repair``) and the end-of-study report (``_report``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tradeoff_search.front import Front, front_latency_unit, metric_names
from tradeoff_search.record._keys import VARIANT_OF
from tradeoff_search.rules import spec_rule
from tradeoff_search.spec._sections import TrackingSection
from tradeoff_search.spec._validation import validate_params
from tradeoff_search.tracking._front_tags import FrontTagger, front_tags
from tradeoff_search.tracking._logged_models import tag_logged_models
from tradeoff_search.tracking._mlflow_ui import share_runs_view
from tradeoff_search.tracking._repair import RecordRepair, SyncReport
from tradeoff_search.tracking._report import log_report
from tradeoff_search.tracking._run_index import RunIndex, study_uid
from tradeoff_search.tracking._trial_runs import TrialRuns
from tradeoff_search.trial._staging import remove_staged

if TYPE_CHECKING:
    import optuna


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
        self._trial_runs = TrialRuns(self._runs, log_models, self.model_dir, self.custom_objects)
        self._front = FrontTagger(self._runs, self.hypervolume_reference)
        self._repair = RecordRepair(self._runs, self._trial_runs)
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

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        parent_id = self._parent(study)
        front = Front.of(study)
        # The trial, and the variants of its model a TradeoffObjective added (see _variants) before this callback
        variants = [t for t in front.trials if t.user_attrs.get(VARIANT_OF) == trial.number]
        for logged in (trial, *variants):
            tags = front_tags(logged, front.ranks.get(logged.number))  # written as the run is created
            with_model = self._trial_runs.wants_model(logged, front)
            child = self._trial_runs.log(study, logged, parent_id, with_model, tags)
            self._runs.children.setdefault(logged.number, child)
            if self.model_dir is not None:
                remove_staged(self.model_dir, logged.number)
        step = max(t.number for t in (trial, *variants))
        self._front.update(study, parent_id, front, step=step, refresh=False)

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
        report = self._repair.sync(study, self._parent(study), grace_seconds)
        self.finish(study)
        return report

    def missing(self, study: optuna.Study) -> dict[str, list[int]]:
        """What the MLflow record lacks of ``study``, by what and trial numbers (empty: complete).

        Complete means: the parent run finished (else an entry without trials), and every COMPLETE trial
        has a finished run with its objectives' metrics, the Pareto tag the storage's front gives
        it and, where ``log_models`` asks for it and the trial produced one, its model.
        """
        parent_id = self._parent(study)
        return self._repair.missing(study, parent_id, Front.of(study))

    def finish(self, study: optuna.Study) -> None:
        """Refresh the Pareto tags (of runs and logged models); log the front, plots and
        importances; store the runs view in the front's latency unit; close the parent run."""
        parent_id = self._parent(study)
        front = Front.of(study)
        self._front.update(study, parent_id, front, step=max((t.number for t in front.trials), default=0), refresh=True)
        self._front.log_device(study, parent_id)
        self._front.log_retimed(parent_id, front)
        log_report(self._runs.client, parent_id, study, front, self._front.reference(front))
        experiment_id = self._runs.experiment_id(study)
        tag_logged_models(self._runs.client, experiment_id, study_uid(study), front, self.log_models == "all")
        share_runs_view(self._runs.client, experiment_id, front.metric_names, front_latency_unit(front))
        self._runs.client.set_terminated(parent_id, "FINISHED")

    def _parent(self, study: optuna.Study) -> str:
        """The study's parent run (see :meth:`RunIndex.parent`)."""
        self._check(study)
        return self._runs.parent(study)
