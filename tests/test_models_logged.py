"""A model logged to MLflow loads back and predicts exactly as it did before logging."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow.keras
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from tradeoff_search import MLflowParetoCallback, StudySpec, TradeoffObjective
from tradeoff_search.trial._staging import staged_model_path

from .conftest import TINY_SPEC, litert_outputs

pytestmark = pytest.mark.e2e


def test_logged_pareto_model_predicts_as_before(
    write_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store
) -> None:
    spec = StudySpec.load(write_spec(TINY_SPEC + '[tracking]\nlog_models = "all"\n'))
    staging = tmp_path / "staging"
    objective = TradeoffObjective(spec, model_dir=staging)
    before: dict[int, np.ndarray] = {}
    x = objective.data.x_val

    def predict_staged(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        model = keras.models.load_model(staged_model_path(staging, trial.number))
        before[trial.number] = np.asarray(model(x, training=False))

    uri = mlflow_store()
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="models", log_models="all", model_dir=staging)
    study = optuna.create_study(directions=objective.directions)
    study.set_metric_names(spec.metric_names)
    study.optimize(objective, n_trials=2, callbacks=[predict_staged, callback])

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("models").experiment_id], "tags.`optuna.trial` = '0'")
    run_id = runs[0].info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as a user points MLflow at the study's store
    loaded = mlflow.keras.load_model(f"runs:/{run_id}/model")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), before[0])

    tflite = Path(client.download_artifacts(run_id, "tflite/model.tflite", str(tmp_path)))
    np.testing.assert_allclose(litert_outputs(tflite, x), before[0], atol=1e-5)
    assert not staging.exists() or not any(staging.iterdir())  # logged, then removed

    # The same files as the run's logged model (MLflow 3's Models view), with the run's metrics
    callback.finish(study)
    (model,) = client.search_logged_models([runs[0].info.experiment_id], filter_string="name = 'trial-0000'")
    assert model.source_run_id == run_id and model.status == "READY"
    assert model.params["optimizer"] == study.trials[0].params["optimizer"]
    metrics = {m.key: m.value for m in model.metrics}
    assert metrics["accuracy"] == study.trials[0].values[0]
    assert metrics["latency_us"] == runs[0].data.metrics["latency_us"]
    assert model.tags["pareto"] == str(0 in {t.number for t in study.best_trials}).lower()
    loaded = mlflow.keras.load_model(f"models:/{model.model_id}")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), before[0])
    shipped = Path(mlflow.artifacts.download_artifacts(f"{model.artifact_location}/tflite/model.tflite"))
    assert shipped.read_bytes() == tflite.read_bytes()

    # A record written before the Models view held models: sync lists the front's from their runs' files
    experiment_id = runs[0].info.experiment_id
    for logged in client.search_logged_models([experiment_id]):
        client.delete_logged_model(logged.model_id)
    front = sorted(t.number for t in study.best_trials)
    assert callback.sync(study).listed == front
    relisted = client.search_logged_models([experiment_id])
    assert sorted(int(m.tags["optuna.trial"]) for m in relisted) == front and {m.status for m in relisted} == {"READY"}
    if 0 in front:
        (again,) = [m for m in relisted if m.name == "trial-0000"]
        loaded = mlflow.keras.load_model(f"models:/{again.model_id}")
        np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), before[0])
    assert callback.sync(study).listed == []  # once
