"""A trial's MLflow run, written once: its tags, params, metrics, traceback and logged model files.

Created with every tag it will have, its params and metrics in one batch, ended in its trial's
state last: until that write the run is RUNNING, which is how the repair (``_repair``) tells a run
its worker did not finish.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.front import Front, in_microseconds, is_feasible, metric_names
from tradeoff_search.record._keys import (
    CONVERSION_WARNINGS,
    FAIL_REASON,
    HISTORY,
    LATENCY,
    LATENCY_DISPLAY_METRIC,
    LATENCY_METRIC,
    N_PARAMS,
    PARAMS_METRIC,
    PRUNE_REASON,
    RAM_REFUSAL,
    TRACEBACK,
    TRAINED,
    VARIANT_OF,
)
from tradeoff_search.tracking._logged_models import MODEL_METRICS, log_logged_model
from tradeoff_search.tracking._run_index import (
    CHILD,
    TAG_ROLE,
    TAG_STUDY,
    TAG_STUDY_UID,
    TAG_TRIAL,
    ChildRun,
    RunIndex,
    millis,
    study_uid,
)
from tradeoff_search.trial._staging import holds_recorded, staged_model_path, trial_dir

if TYPE_CHECKING:
    import optuna
    from mlflow.entities import Metric

_logger = logging.getLogger(__name__)

_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
_BATCH = 1000  # MLflow's limit of metrics per log_batch
TAG_TRAINING = "training"  # a trained trial's run and its variants' (see _variants): the trained trial's number

# Where the Keras flavor keeps the model, and where the LiteRT file goes, in a trial's run.
FLAVOR_KERAS_FILE = "data/model.keras"
RUN_FILES = {"model.keras": f"model/{FLAVOR_KERAS_FILE}", "model.tflite": "tflite/model.tflite"}


class TrialRuns:
    """Writes trials' runs in a study's run index, with the model files a trial staged.

    Args:
        runs: where the study's runs are.
        log_models: ``"pareto"``, ``"all"`` or ``"none"`` (see :class:`MLflowParetoCallback`).
        model_dir: where the objective stages each trial's model.
        custom_objects: your own Keras classes by name, to load a staged model for logging.
    """

    def __init__(
        self, runs: RunIndex, log_models: str, model_dir: Path | None, custom_objects: dict[str, type]
    ) -> None:
        self.runs = runs
        self.log_models = log_models
        self.model_dir = model_dir
        self.custom_objects = custom_objects

    def wants_model(self, trial: optuna.trial.FrozenTrial, front: Front) -> bool:
        # A trial off the front when it finishes stays off it: later trials can only dominate it.
        return self.log_models == "all" or (self.log_models == "pareto" and front.ranks.get(trial.number) == 0)

    def log(
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
        last write the run is RUNNING, which is how :meth:`MLflowParetoCallback.sync` and
        :meth:`MLflowParetoCallback.missing` tell a run its worker did not finish."""
        from mlflow.entities import Metric, Param

        client = self.runs.client
        existing = self.runs.trial_run(study, trial.number)
        if existing is not None:
            return ChildRun(existing, {})  # its Pareto tags are unknown here: the front's update writes them
        start, end = millis(trial.datetime_start), _ended(trial)
        tags = {"mlflow.parentRunId": parent_id, TAG_STUDY: study.study_name, TAG_ROLE: CHILD,
                TAG_STUDY_UID: study_uid(study), TAG_TRIAL: str(trial.number)}  # fmt: skip
        front = dict(front_tags or {})
        run = client.create_run(
            self.runs.experiment_id(study),
            start_time=start,
            run_name=f"trial-{trial.number:04d}",
            tags={**tags, **_trial_tags(trial), **front},
        )
        run_id = run.info.run_id
        metrics = _summary(metric_names(study), trial)
        for curve, values in (trial.user_attrs.get(HISTORY) or {}).items():
            metrics += [Metric(curve, float(v), end, epoch) for epoch, v in enumerate(values) if math.isfinite(v)]
        params = [Param(k, str(v)) for k, v in trial.params.items()]
        for i in range(0, max(len(metrics), 1), _BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + _BATCH], params=params if i == 0 else ())
        if with_model and self.model_dir is not None:
            self.log_model(study, run_id, trial)
        if TRACEBACK in trial.user_attrs:
            client.log_text(run_id, str(trial.user_attrs[TRACEBACK]), "traceback.txt")
        client.set_terminated(run_id, _STATUS.get(trial.state.name, "FAILED"), end_time=end)
        return ChildRun(run_id, front)

    def log_model(self, study: optuna.Study, run_id: str, trial: optuna.trial.FrozenTrial) -> None:
        """Log the trial's staged files, if they are what the trial recorded (see :func:`stage_model`):
        ``model`` (MLflow's Keras flavor, with signature, holding the staged ``model.keras``
        itself) and ``tflite/model.tflite``; then the same files as the run's logged model
        (see ``_logged_models``)."""
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
        self.runs.client.log_artifacts(run_id, str(flavor_dir), "model")
        self.runs.client.log_artifact(run_id, str(directory / "model.tflite"), "tflite")
        self.log_logged_model(study, run_id, trial, (flavor_dir, directory / "model.tflite"))

    def log_logged_model(
        self, study: optuna.Study, run_id: str, trial: optuna.trial.FrozenTrial, files: tuple[Path, Path]
    ) -> None:
        """``files`` (the Keras flavor's folder, the ``.tflite``) as the logged model of the trial's
        run, with the numbers a model is chosen by (see ``_logged_models``)."""
        names = metric_names(study)
        metrics = [metric for metric in _summary(names, trial) if metric.key in {*names, *MODEL_METRICS}]
        experiment_id = self.runs.experiment_id(study)
        log_logged_model(self.runs.client, experiment_id, run_id, trial, files, metrics, study_uid(study))

    def has_model(self, run_id: str) -> bool:
        folders = {path.partition("/")[0] for path in RUN_FILES.values()}
        return folders <= {artifact.path for artifact in self.runs.client.list_artifacts(run_id)}


def _summary(names: Sequence[str], trial: optuna.trial.FrozenTrial) -> list[Metric]:
    """The trial's numbers as metrics at step 0, stamped with its end."""
    from mlflow.entities import Metric

    return [Metric(key, value, _ended(trial), 0) for key, value in _trial_metrics(names, trial).items()]


def _ended(trial: optuna.trial.FrozenTrial) -> int:
    """When ``trial`` ended, in ms (a finished trial has both times)."""
    return millis(trial.datetime_complete) or millis(trial.datetime_start) or 0


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
    if LATENCY_METRIC in metrics:  # what MLflow's runs table shows (see tracking._mlflow_ui)
        metrics[LATENCY_DISPLAY_METRIC] = in_microseconds(metrics[LATENCY_METRIC])
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


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
    if RAM_REFUSAL in trial.user_attrs:  # why the micro runtime cannot run it (ram_bytes, a metric, else)
        tags[RAM_REFUSAL] = str(trial.user_attrs[RAM_REFUSAL])[:5000]
    if trial.user_attrs.get(TRAINED):  # the runs of one training (a trial and its variants) share it
        tags[TAG_TRAINING] = str(trial.user_attrs.get(VARIANT_OF, trial.number))
    return tags


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
