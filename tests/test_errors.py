"""Bad input (SpecError) and a run that cannot go on (RunError): two errors of one shape, one line
naming the source, the key and the value; the CLI prints either and exits with 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradeoff_search import RunError, SpecError, StudySpec, select_model
from tradeoff_search.cli._cli import main
from tradeoff_search.study._open import open_study


def test_a_study_without_a_front_is_a_run_error_not_a_spec_error(
    write_spec, tmp_path: Path, mlflow_store, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = StudySpec.load(write_spec())
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = open_study(spec, storage)  # created, never run
    with pytest.raises(RunError) as caught:
        select_model(spec, study, tmp_path / "out")
    assert not isinstance(caught.value, SpecError) and isinstance(caught.value, ValueError)
    expected = f'{spec.path}: study.name = "tiny": expected a study with a front to choose from (run it first)'
    assert str(caught.value) == expected and caught.value.key == "study.name"
    tracking = mlflow_store()
    capfd.readouterr()  # Optuna's line about the study it created
    assert main(["select", str(spec.path), "--storage", storage, "--tracking-uri", tracking]) == 2
    assert capfd.readouterr().err.splitlines() == [f"error: {expected}"]
    assert not (tmp_path / "out").exists()
