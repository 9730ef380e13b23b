"""End-to-end: real studies with tiny real Keras models, real Optuna and MLflow stores."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tradeoff_search.cli._cli import main
from tradeoff_search.tracking._run_index import TAG_ROLE

from .conftest import REPO, FinishedStudy

pytestmark = pytest.mark.e2e


def test_cli_run_then_pareto_and_sync(
    tiny_cli_study: FinishedStudy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tiny_cli_study.folder  # `run spec.toml` there, by the CLI
    assert "Pareto set of study 'tiny' (3 complete, 0 failed trials)" in tiny_cli_study.stdout

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/mlruns/optuna.db")
    assert study.metric_names == ["accuracy", "latency_ms"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["n_params"] > 0 and trial.user_attrs["train_seconds"] > 0
        assert 1 <= trial.user_attrs["epochs"] <= 2
        assert trial.user_attrs["latency"]["runtime"] == "litert"
    with sqlite3.connect(folder / "mlruns" / "optuna.db") as database:  # one append per commit, not two syncs
        assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags[TAG_ROLE] == "study"]
    children = {int(r.data.tags["optuna.trial"]): r for r in runs if r.data.tags[TAG_ROLE] == "trial"}
    assert len(parents) == 1 and len(runs) == 4
    for trial in study.trials:  # one to one, same numbers
        run = children[trial.number]
        assert run.data.metrics["accuracy"] == pytest.approx(trial.values[0])
        assert run.data.metrics["latency_ms"] == pytest.approx(trial.values[1])
        assert run.data.metrics["params"] == trial.user_attrs["n_params"]
        assert run.data.metrics["train_seconds"] == pytest.approx(trial.user_attrs["train_seconds"])
        assert run.data.params["optimizer"] == trial.params["optimizer"]
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == trial.user_attrs["epochs"]
    pareto = {n for n, r in children.items() if r.data.tags["pareto"] == "true"}
    assert pareto == {t.number for t in study.best_trials}
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"pareto.csv", "pareto_front.png", "hypervolume.png", "spec.json"} <= artifacts
    assert {"param_importances.json", "param_importances.png"} <= artifacts
    hypervolume = client.get_metric_history(parents[0].info.run_id, "hypervolume")
    assert [m.step for m in hypervolume][:3] == [0, 1, 2] and hypervolume[-1].value > 0
    for number in pareto:  # log_models = "pareto" (the default): a Keras model and its .tflite
        logged = {a.path for a in client.list_artifacts(children[number].info.run_id)}
        assert "tflite" in logged
    assert not any((folder / "mlruns" / "staging" / "tiny").iterdir())
    assert str(folder / "mlruns") in client.get_run(parents[0].info.run_id).info.artifact_uri

    # pareto and sync in this process (the CLI's main, as `python -m tradeoff_search` calls it),
    # run and select as processes of their own.
    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert main(["pareto", "spec.toml"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + len(pareto)
    assert main(["pareto", "spec.toml", "--explain"]) == 0
    explained = capsys.readouterr().out
    for objective in ("accuracy", "latency_ms"):
        decided = re.search(rf"^what decides {objective}: (.+)$", explained, re.MULTILINE)
        assert decided and "learning_rate" in decided.group(1), explained
    assert "(from 3 feasible trials, whose best 10% are 1: a hint)" in explained

    # Resuming a finished study runs nothing and duplicates nothing; sync twice changes nothing.
    again = subprocess.run(
        [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--no-progress"],
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert main(["sync", "spec.toml"]) == 0 and main(["sync", "spec.toml"]) == 0
    assert len(client.search_runs([experiment.experiment_id])) == 4
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/mlruns/optuna.db").trials) == 3

    chosen = subprocess.run(
        [sys.executable, "-m", "tradeoff_search", "select", "spec.toml", "--out", "chosen"],
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert (folder / "chosen" / "model.tflite").stat().st_size > 0
    assert "registered tiny-selected version 1" in chosen.stdout
    assert "Downloading artifacts" not in chosen.stdout + chosen.stderr  # MLflow's progress bar
    for flags, named in [
        (("--out", "spec.toml/x"), "--out: out = "),
        (("--max-latency-ms", "1e-9"), "--max-latency-ms"),
    ]:
        refused = subprocess.run(
            [sys.executable, "-m", "tradeoff_search", "select", "spec.toml", *flags],
            cwd=folder, capture_output=True, text=True,
        )  # fmt: skip
        assert refused.returncode == 2 and refused.stderr.startswith(f"error: {named}"), refused.stderr[-2000:]
        assert len(refused.stderr.splitlines()) == 1, refused.stderr


def test_readme_python_api_snippet_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = re.search(
        r"```python\n(import optuna\nfrom tradeoff_search import StudySpec, TradeoffObjective\n.*?)```", readme, re.S
    )
    assert snippet, "the README's Python API snippet is missing"
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(snippet.group(1), "README.md", "exec"), namespace)  # the README's own code, as a user runs it
    study = namespace["study"]
    assert len(study.trials) == 10
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.best_trials


def test_user_arrays_and_a_latency_budget(write_spec, tmp_path: Path) -> None:
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    from tradeoff_search import StudySpec, TradeoffObjective

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x_train, x_val, y_train, y_val = train_test_split(x, y, random_state=0, stratify=y)
    spec = StudySpec.load(write_spec(
        '[data]\nsource = "sklearn:iris"\n[latency]\nbudget_ms = 0.0001\nmax_seconds = 0.1\n'
        '[model]\nunits = [4, 8]\n[training]\nmax_epochs = 1\n'
    ))  # fmt: skip
    objective = TradeoffObjective(spec, data=(x_train, y_train, x_val, y_val))
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=2)
    # 0.1 µs is below LiteRT's per-call floor: every candidate is over budget, none is trained.
    for trial in study.trials:
        assert trial.user_attrs["trained"] is False and "epochs" not in trial.user_attrs
        assert trial.constraints["latency_ms_over_budget"] > 0
    assert study.best_trials == []
