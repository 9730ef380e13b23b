"""The public API refuses misuse up front, naming the parameter (no Keras model is built here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from tradeoff_search import MLflowParetoCallback, StudySpec, TradeoffObjective, measure_latency, run_study, select_model
from tradeoff_search.rules import SpecError
from tradeoff_search.study._open import open_study, stored_spec

from .conftest import TINY_SPEC


@pytest.fixture
def spec(write_spec) -> StudySpec:
    return StudySpec.load(write_spec(TINY_SPEC))


def test_objective_takes_a_spec_and_arrays_or_a_dataset(spec: StudySpec) -> None:
    with pytest.raises(TypeError, match=r"spec=.tiny\.toml.: expected a StudySpec, e\.g\. StudySpec\.load"):
        TradeoffObjective("tiny.toml")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"data: expected .* or a Dataset, got list"):
        TradeoffObjective(spec, data=[np.zeros((4, 2))] * 4)  # type: ignore[arg-type]


def test_objective_refuses_a_study_of_other_directions(spec: StudySpec) -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])
    with pytest.raises(ValueError, match=r"study directions \['minimize', 'maximize'\]: expected objective.directions"):
        study.optimize(TradeoffObjective(spec), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and "trained" not in study.trials[0].user_attrs


def test_run_study_refuses_arrays_its_workers_would_not_use(spec: StudySpec, in_tmp: Path) -> None:
    x, y = np.random.default_rng(0).normal(size=(20, 4)), np.arange(20) % 3
    with pytest.raises(ValueError, match=r"data with workers=2: worker processes load the spec's data source"):
        run_study(spec, workers=2, data=(x, y, x, y))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers=-1: expected 0"):
        run_study(spec, workers=-1)
    assert not (in_tmp / "mlruns").exists()


def test_select_model_names_what_is_missing(spec: StudySpec, tmp_path: Path) -> None:
    study = optuna.create_study(study_name="tiny", directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="rule='max_latency' needs max_latency_ms"):
        select_model(spec, study, tmp_path, rule="max_latency")
    with pytest.raises(ValueError, match="rule='min_accuracy' needs min_accuracy"):
        select_model(spec, study, tmp_path, rule="min_accuracy")
    with pytest.raises(ValueError, match="a study with a front to choose from"):
        select_model(spec, study, tmp_path)
    with pytest.raises(ValueError, match="expected accuracy and latency objectives, got 1"):
        select_model(spec, optuna.create_study(), tmp_path)


def test_workers_take_the_spec_stored_in_the_study_not_its_file(spec: StudySpec, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    open_study(spec, storage)
    spec.path.write_text(
        spec.path.read_text(encoding="utf-8").replace("units = [4, 16]", "units = [64, 128]"), encoding="utf-8"
    )
    stored = stored_spec(spec.path, spec.study.name, storage)  # as a worker started after the edit loads it
    assert stored.model == spec.model and stored.model.units.high == 16 and stored.path == spec.path
    with pytest.raises(SpecError, match=r"study.name = \"other\": expected a study of sqlite:///.* that holds"):
        stored_spec(spec.path, "other", storage)


def test_arrays_must_have_the_rows_of_the_spec(write_spec) -> None:
    images = TINY_SPEC.replace('source = "sklearn:iris"', 'source = "sklearn:digits"\ninput_shape = [8, 8, 1]')
    spec = StudySpec.load(write_spec(images.replace("[model]\n", '[model]\nfamilies = ["cnn2d"]\n')))
    x, y = np.random.default_rng(0).normal(size=(20, 64)), np.arange(20) % 2
    with pytest.raises(ValueError, match=r"rows of shape \(64,\), but the spec's data.input_shape is \[8, 8, 1\]"):
        TradeoffObjective(spec, data=(x, y, x, y))
    TradeoffObjective(spec, data=(x.reshape(20, 8, 8, 1), y, x.reshape(20, 8, 8, 1), y))


def test_a_dataset_holds_class_codes() -> None:
    from tradeoff_search import Dataset

    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"y_train: expected every class code 0..6, got none of \[0, 1, 2, 3, 4\]"):
        Dataset(x, np.array([5, 6, 5, 6]), x, np.array([5, 6, 5, 6]))
    with pytest.raises(ValueError, match="y_val: expected integer class codes"):
        Dataset(x, np.array([0, 1, 0, 1]), x, np.array(["a", "b", "a", "b"]))


def test_stores_are_urls(spec: StudySpec, in_tmp: Path) -> None:
    from tradeoff_search import MLflowParetoCallback

    with pytest.raises(TypeError, match=r"storage: expected a URL string .* got InMemoryStorage"):
        run_study(spec, storage=optuna.storages.InMemoryStorage())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"tracking_uri: expected a URL string .* got NoneType"):
        run_study(spec, tracking_uri=None)  # type: ignore[arg-type]
    for bare in ("mlruns", "file:///tmp/store"):
        with pytest.raises(ValueError, match=f"tracking_uri='{bare}': expected a database or server URI"):
            MLflowParetoCallback(tracking_uri=bare)
    assert not (in_tmp / "mlruns").exists()


def test_a_bad_argument_names_the_parameter_and_the_cli_names_the_flag(
    spec: StudySpec, in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from tradeoff_search.cli._cli import main

    expected = r"expected a URL of sqlite, postgresql, mysql, mssql, such as sqlite:///mlruns/optuna\.db"
    with pytest.raises(ValueError, match=rf'^run_study: storage="optuna\.db": {expected}$'):
        run_study(spec, storage="optuna.db")
    assert main(["run", str(spec.path), "--storage", "optuna.db"]) == 2
    assert capfd.readouterr().err.splitlines() == [
        'error: --storage: storage = "optuna.db": expected a URL of sqlite, postgresql, mysql, mssql, '
        "such as sqlite:///mlruns/optuna.db"
    ]
    with pytest.raises(ValueError, match=r'^measure_latency: runtime="onnx": expected one of \["litert", "tf"\]$'):
        measure_latency(b"", runtime="onnx")
    with pytest.raises(ValueError, match=r'^MLflowParetoCallback: log_models="best": expected one of \["pareto"'):
        MLflowParetoCallback(log_models="best")
    assert not (in_tmp / "mlruns").exists()


def test_a_failing_cleanup_does_not_hide_the_first_error(spec: StudySpec, tmp_path: Path, mlflow_store) -> None:
    """A callback raises, and the record cannot be completed after it (its experiment is gone):
    the callback's error is what run_study raises."""
    from mlflow import MlflowClient

    uri = mlflow_store()

    def boom(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        client = MlflowClient(uri)
        client.delete_experiment(client.get_experiment_by_name("tiny").experiment_id)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_study(spec.override(n_trials=1), storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=uri,
                  callbacks=[boom])  # fmt: skip
