"""The Optuna storage vouches for the MLflow record: on a shared MLflow server, where anyone can
write runs with any tags, ``select`` ships only the model files a trial recorded, and a study
that reuses a name keeps to its own runs."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import mlflow.keras
import pytest
from mlflow import MlflowClient

from tradeoff_search import IntegrityError, StudySpec, run_study, select_model
from tradeoff_search.cli._cli import main
from tradeoff_search.cost._convert import to_tflite
from tradeoff_search.record._keys import MODEL_DIGESTS_ATTR, PARENT_RUN_ATTR, STUDY_UID_ATTR
from tradeoff_search.study._finish import make_callback
from tradeoff_search.tracking._run_index import TAG_ROLE, TAG_STUDY, TAG_STUDY_UID, TAG_TRIAL
from tradeoff_search.trial._staging import file_digest

from .conftest import TINY_SPEC

pytestmark = pytest.mark.e2e

SPEC = TINY_SPEC.replace("n_trials = 3", "n_trials = 1") + '[tracking]\nlog_models = "all"\n'


def _plant(client: MlflowClient, experiment: str, folder: Path, tags: dict[str, str], **kwargs: object) -> str:
    """A run with the given tags and a model of the right shape that is not the study's."""
    run_id = client.create_run(experiment, tags=tags, **kwargs).info.run_id
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    mlflow.keras.save_model(model, str(folder / run_id / "model"))
    (folder / run_id / "model.tflite").write_bytes(to_tflite(model))
    client.log_artifacts(run_id, str(folder / run_id / "model"), "model")
    client.log_artifact(run_id, str(folder / run_id / "model.tflite"), "tflite")
    return run_id


def test_select_ships_only_what_the_study_recorded(
    mlflow_server: str, write_spec, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    spec_path = write_spec(SPEC)
    spec = StudySpec.load(spec_path)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = run_study(spec, storage=storage, tracking_uri=mlflow_server)
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    parent_id, uid = study.user_attrs[PARENT_RUN_ATTR], study.user_attrs[STUDY_UID_ATTR]
    number = select_model(spec, study, tmp_path / "first", tracking_uri=mlflow_server).trial
    recorded = study.trials[number].user_attrs[MODEL_DIGESTS_ATTR]
    (genuine,) = client.search_runs([experiment], f"tags.`{TAG_TRIAL}` = '{number}'")

    # Someone with write access plants a newer run of the same trial under the study's parent run,
    # and an older parent run with the study's name and identity, holding a run of that trial too.
    trial_tags = {TAG_STUDY: "tiny", TAG_STUDY_UID: uid, TAG_ROLE: "trial", TAG_TRIAL: str(number)}
    newer = _plant(client, experiment, tmp_path / "planted", {**trial_tags, "mlflow.parentRunId": parent_id})
    older_parent = client.create_run(
        experiment, start_time=1, run_name="tiny", tags={TAG_STUDY: "tiny", TAG_STUDY_UID: uid, TAG_ROLE: "study"}
    ).info.run_id
    _plant(client, experiment, tmp_path / "planted", {**trial_tags, "mlflow.parentRunId": older_parent}, start_time=2)

    assert make_callback(spec, mlflow_server)._parent(study) == parent_id  # the storage names it
    with caplog.at_level(logging.WARNING, logger="tradeoff_search"):
        chosen = select_model(spec, study, tmp_path / "second", tracking_uri=mlflow_server)
    assert chosen.trial == number
    for name in ("model.keras", "model.tflite"):
        assert file_digest(tmp_path / "second" / name) == recorded[name]
    assert newer in caplog.text  # passed over, and said so
    version = client.get_model_version(chosen.registered_model, chosen.registered_version)
    assert version.run_id == genuine.info.run_id

    # With the study's own run gone, only planted files are left: nothing is shipped.
    client.delete_run(genuine.info.run_id)
    with pytest.raises(IntegrityError, match=rf"trial {number}: no MLflow run holds the model the study recorded"):
        select_model(spec, study, tmp_path / "third", tracking_uri=mlflow_server)
    capsys.readouterr()
    argv = ["select", str(spec_path), "--storage", storage, "--tracking-uri", mlflow_server, "--out", "x"]
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: trial {number}: no MLflow run holds") and newer in err[0]
    assert not (tmp_path / "third").exists() and not Path("x").exists()

    # The same spec in a new Optuna storage (mlruns/optuna.db deleted) is a new study: its own
    # parent run, named apart in the UI, and its own models, not the old study's.
    again = run_study(spec.override(n_trials=1), storage=f"sqlite:///{tmp_path}/again.db", tracking_uri=mlflow_server)
    new_uid, new_parent = again.user_attrs[STUDY_UID_ATTR], again.user_attrs[PARENT_RUN_ATTR]
    assert new_uid != uid and new_parent != parent_id
    assert client.get_run(new_parent).info.run_name == f"tiny ({new_uid[:8]})"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{new_parent}'")
    assert [r.data.tags[TAG_TRIAL] for r in children] == ["0"]
    last = select_model(spec, again, tmp_path / "again", tracking_uri=mlflow_server)
    assert (
        file_digest(tmp_path / "again" / "model.keras") == again.trials[0].user_attrs[MODEL_DIGESTS_ATTR]["model.keras"]
    )
    assert client.get_model_version(last.registered_model, last.registered_version).run_id == children[0].info.run_id
