"""A trial's model in MLflow 3's Models view of the experiment: a logged model named after its
trial run (``trial-0007``), linked to it as the run's output, holding the same files as the run's
``model`` and ``tflite`` folders, with the trial's hyperparameters as its params and the numbers a model is
chosen by as its metrics (the objectives, ``latency_us``, ``params``, ``model_bytes``, ``macs``,
``ram_bytes``; the run keeps every statistic), so that the front's models compare side by side
where MLflow users look for models. At the study's end each model is tagged as its
run is, ``pareto`` and ``pareto_rank``: a model logged on the front may have left it since.

The run's own files stay what ``select`` and ``sync`` read; the logged model is written after
them, and is marked FAILED if its upload fails halfway.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tradeoff_search.front import Front
from tradeoff_search.record._keys import LATENCY_DISPLAY_METRIC, MACS, MODEL_BYTES, PARAMS_METRIC, RAM_BYTES
from tradeoff_search.tracking._front_tags import front_tags
from tradeoff_search.tracking._run_index import TAG_STUDY_UID, TAG_TRIAL, filter_value

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel, Metric

MODEL_TYPE = "keras"
MODEL_METRICS = (LATENCY_DISPLAY_METRIC, PARAMS_METRIC, MODEL_BYTES, MACS, RAM_BYTES)  # besides the objectives


def log_logged_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    trial: optuna.trial.FrozenTrial,
    files: tuple[Path, Path],
    metrics: Sequence[Metric],
    uid: str,
) -> str:
    """Log ``files`` (the Keras flavor's folder, the ``.tflite``) as the logged model of ``trial``'s
    run ``run_id`` of the study ``uid`` (see :func:`study_uid`), with ``metrics`` (the run's, at
    their timestamps) as its own; returns its id."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.entities import Metric as LoggedMetric

    flavor_dir, tflite = files
    model = client.create_logged_model(
        experiment_id,
        name=f"trial-{trial.number:04d}",
        source_run_id=run_id,
        tags={TAG_TRIAL: str(trial.number), TAG_STUDY_UID: uid},
        params={key: str(value) for key, value in trial.params.items()},
        model_type=MODEL_TYPE,
    )
    try:
        client.log_model_artifacts(model.model_id, str(flavor_dir))
        with tempfile.TemporaryDirectory() as folder:  # the .tflite alone, in the folder the run has it in
            shutil.copyfile(tflite, Path(folder) / tflite.name)
            client.log_model_artifacts(model.model_id, folder, "tflite")
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        # The run has these metrics already (same key, value, time, step): MLflow adds them to the model only.
        linked = [LoggedMetric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id) for m in metrics]
        client.log_batch(run_id, metrics=linked)
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return str(model.model_id)


def logged_models(client: MlflowClient, experiment_id: str, uid: str) -> list[LoggedModel]:
    """The logged models of the study ``uid`` (see :func:`study_uid`) in ``experiment_id``."""
    found, token = f"tags.`{TAG_STUDY_UID}` = {filter_value(uid)}", None
    models: list[LoggedModel] = []
    while True:
        page = client.search_logged_models([experiment_id], filter_string=found, page_token=token)
        models += page
        token = page.token
        if not token:
            return models


def tag_logged_models(client: MlflowClient, experiment_id: str, uid: str, front: Front, keep_all: bool) -> None:
    """Tag the logged models of the study ``uid`` with their trial's Pareto tags, where they differ;
    unless ``keep_all`` (``log_models = "all"``), delete those of trials no longer on the front
    (their runs keep the files), so that the Models view lists the front."""
    by_number = {trial.number: trial for trial in front.trials}
    for model in logged_models(client, experiment_id, uid):
        number = int(model.tags[TAG_TRIAL])
        wanted = front_tags(by_number.get(number), front.ranks.get(number))
        if not keep_all and front.ranks.get(number) != 0:
            client.delete_logged_model(model.model_id)
        elif any(model.tags.get(key) != value for key, value in wanted.items()):
            client.set_logged_model_tags(model.model_id, wanted)
