"""The MLflow layer on a plain analytic study (no Keras): layout, states, Pareto tags, idempotence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from tradeoff_search import MLflowParetoCallback
from tradeoff_search.front._pareto import pareto_ranks
from tradeoff_search.record._keys import MODEL_DIGESTS_ATTR, PARENT_RUN_ATTR, WORKER_ATTR
from tradeoff_search.tracking._repair import may_be_writing
from tradeoff_search.tracking._report import _front_figure
from tradeoff_search.tracking._run_index import TAG_ROLE, filter_value
from tradeoff_search.tracking._trial_runs import RUN_FILES
from tradeoff_search.trial._staging import file_digest, stage_model


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0, 1)
    y = trial.suggest_float("y", 0, 1)
    if trial.number == 3:
        raise RuntimeError("boom")
    if trial.number == 5:
        raise optuna.TrialPruned("not promising")
    trial.set_user_attr("n_params", 100 + trial.number)
    return x, (1 - x) ** 2 + y  # maximize x, minimize the other: a real trade-off


def _runs(client: MlflowClient, experiment: str) -> tuple[list, list]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == "study"]
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    return parents, children


def _non_dominated(points: np.ndarray) -> set[int]:
    """Indices not dominated (maximize column 0, minimize column 1): recomputed independently."""
    keep = set()
    for i, (a, b) in enumerate(points):
        dominated = any((c >= a and d <= b) and (c > a or d < b) for c, d in points)
        if not dominated:
            keep.add(i)
    return keep


@pytest.fixture
def tracked(tmp_path: Path, mlflow_store):
    uri = mlflow_store()
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="analytic", storage=storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    study.set_metric_names(["score", "cost"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="analytic-exp")
    study.optimize(_objective, n_trials=12, callbacks=[callback], catch=(RuntimeError,))
    callback.finish(study)
    return study, callback, MlflowClient(uri), storage


def test_layout_states_and_pareto_tags(tracked) -> None:
    study, _, client, _ = tracked
    parents, children = _runs(client, "analytic-exp")
    assert len(parents) == 1 and len(children) == 12
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "analytic"
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert sorted(by_trial) == list(range(12))
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert by_trial[3].info.status == "FAILED"
    assert by_trial[5].info.status == "KILLED"
    complete = [n for n, r in by_trial.items() if r.info.status == "FINISHED"]
    assert len(complete) == 10
    first = by_trial[0]
    assert first.info.run_name == "trial-0000"
    assert set(first.data.params) == {"x", "y"}
    assert {"score", "cost", "params"} <= set(first.data.metrics)
    # tagged Pareto set == non-dominated set recomputed from the logged metrics
    points = np.array([[by_trial[n].data.metrics["score"], by_trial[n].data.metrics["cost"]] for n in complete])
    expected = {complete[i] for i in _non_dominated(points)}
    tagged = {n for n, r in by_trial.items() if r.data.tags.get("pareto") == "true"}
    assert tagged == expected == {t.number for t in study.best_trials}
    assert by_trial[3].data.tags["pareto"] == "false"
    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert history == []  # no latency objective and no reference point: no hypervolume


def test_resume_and_sync_twice_keep_counts(tracked) -> None:
    _, _, client, storage = tracked
    resumed = optuna.load_study(study_name="analytic", storage=storage)
    callback = MLflowParetoCallback(tracking_uri=client.tracking_uri, experiment="analytic-exp")
    resumed.optimize(_objective, n_trials=3, callbacks=[callback])
    parents, children = _runs(client, "analytic-exp")
    assert (len(parents), len(children)) == (1, 15)
    for _ in range(2):
        MLflowParetoCallback(tracking_uri=client.tracking_uri, experiment="analytic-exp").sync(resumed)
        parents, children = _runs(client, "analytic-exp")
        assert (len(parents), len(children)) == (1, 15)
    tagged = {int(r.data.tags["optuna.trial"]) for r in children if r.data.tags.get("pareto") == "true"}
    assert tagged == {t.number for t in resumed.best_trials}


def test_sync_rebuilds_a_lost_record(tracked, mlflow_store) -> None:
    study = tracked[0]
    uri = mlflow_store("rebuilt.db")
    MLflowParetoCallback(tracking_uri=uri, experiment="rebuilt").sync(study)
    parents, children = _runs(MlflowClient(uri), "rebuilt")
    assert len(parents) == 1 and len(children) == len(study.trials)
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(parents[0].info.run_id)}
    assert {"pareto.csv", "pareto_front.png"} <= artifacts


def test_hypervolume_with_a_reference_point(mlflow_store) -> None:
    uri = mlflow_store()
    study = optuna.create_study(directions=["maximize", "minimize"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="hv", hypervolume_reference=[0.0, 2.0])
    for x, y in [(0.5, 1.0), (1.0, 1.5), (0.2, 0.5)]:
        trial = study.ask()
        study.tell(trial, [x, y])
        callback(study, study.trials[-1])
    parent = _runs(MlflowClient(uri), "hv")[0][0]
    values = [m.value for m in MlflowClient(uri).get_metric_history(parent.info.run_id, "hypervolume")]
    # boxes to (0, 2): 0.5·1 → +(1-0.5)·0.5 → +0.2·(1-0.5) = 0.5, 0.75, 0.85
    np.testing.assert_allclose(values, [0.5, 0.75, 0.85])


def test_two_workers_keep_each_others_pareto_tags_live(tmp_path: Path, mlflow_store) -> None:
    """Each worker retags runs the other logged when a new trial moves them onto or off the front,
    before finish(), which brings the ranks below the front up to date."""
    uri = mlflow_store()
    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="shared", storage=storage, directions=["maximize", "minimize"])
    workers = [
        (optuna.load_study(study_name="shared", storage=storage), MLflowParetoCallback(tracking_uri=uri))
        for _ in range(2)
    ]
    # Trial 1 (worker 1) dominates trial 0 (worker 0); trial 4 (worker 0) dominates trials 1-3.
    points = [(0.5, 1.0), (0.6, 0.9), (0.9, 2.0), (0.2, 0.1), (0.95, 0.05), (0.3, 0.5)]
    client = MlflowClient(uri)
    for number, values in enumerate(points):
        study, callback = workers[number % 2]
        trial = study.ask()
        study.tell(trial, values)
        callback(study, study.trials[-1])
        children = _runs(client, "shared")[1]
        tagged = {int(r.data.tags["optuna.trial"]) for r in children if r.data.tags.get("pareto") == "true"}
        expected = _non_dominated(np.array(points[: number + 1]))
        assert tagged == expected, f"after trial {number}"
        ranks = {int(r.data.tags["optuna.trial"]): r.data.tags["pareto_rank"] for r in children}
        assert all((rank == "0") == (n in expected) for n, rank in ranks.items())
    # Ranks below the front wait for finish() (trial 0's went from 1 to 2 as trial 4 came): then all are right.
    callback.finish(study)
    ranks = {int(r.data.tags["optuna.trial"]): r.data.tags["pareto_rank"] for r in _runs(client, "shared")[1]}
    assert ranks == {n: str(rank) for n, rank in pareto_ranks(study.trials, study.directions).items()}


def test_finish_logs_the_retimed_front(tmp_path: Path, mlflow_store) -> None:
    from tradeoff_search.front import front_rows
    from tradeoff_search.record._keys import RETIMED_ATTR

    uri = mlflow_store()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="retimed")
    for values in [(0.5, 0.001), (0.9, 0.002), (0.4, 0.003)]:
        trial = study.ask()
        study.tell(trial, values)
        callback(study, study.trials[-1])
    # Re-timed side by side, trial 1 turns out faster than trial 0: trial 0 leaves the front.
    study.set_user_attr(RETIMED_ATTR, {"0": 0.0011, "1": 0.0010})
    callback.finish(study)
    parents, children = _runs(MlflowClient(uri), "retimed")
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert by_trial[0].data.metrics["latency_retimed_ms"] == 0.0011
    assert by_trial[1].data.metrics["latency_retimed_ms"] == 0.0010
    assert (by_trial[0].data.tags["pareto_retimed"], by_trial[1].data.tags["pareto_retimed"]) == ("false", "true")
    assert "latency_retimed_ms" not in by_trial[2].data.metrics
    assert parents[0].data.tags["pareto_retimed_size"] == "1"
    assert [(row["trial"], row["pareto_retimed"]) for row in front_rows(study)] == [(0, False), (1, True)]


def test_four_objectives_get_a_front_plot_and_a_hypervolume(mlflow_store) -> None:
    """Optuna plots at most 3 objectives, so the plot shows the first two; the hypervolume is over
    all four (no latency among them: it is on a log scale)."""
    uri = mlflow_store()
    study = optuna.create_study(directions=["maximize", "minimize", "minimize", "minimize"])
    study.set_metric_names(["score", "cost", "size", "bytes"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="four", hypervolume_reference=[0.0, 1.0, 1.0, 1.0])
    for values in [(0.5, 0.5, 0.5, 0.5), (0.9, 0.9, 0.5, 0.5)]:
        trial = study.ask()
        study.tell(trial, values)
        callback(study, study.trials[-1])
    callback.finish(study)
    client = MlflowClient(uri)
    parent = _runs(client, "four")[0][0]
    assert "pareto_front.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    values = [m.value for m in client.get_metric_history(parent.info.run_id, "hypervolume")]
    # 0.5·0.5·0.5·0.5, then the union with 0.9·0.1·0.5·0.5: 0.0625 + (0.9 - 0.5)·0.1·0.25; finish() logs the last again
    np.testing.assert_allclose(values, [0.0625, 0.0725, 0.0725])


def test_front_table_shows_params_once_when_it_is_an_objective() -> None:
    from tradeoff_search.front import front_rows

    cases = [
        (["accuracy", "latency_ms"], ["trial", "accuracy", "latency_ms", "n_params", "x"]),
        (["accuracy", "latency_ms", "params"], ["trial", "accuracy", "latency_ms", "params", "x"]),
    ]
    for names, expected in cases:
        study = optuna.create_study(directions=["maximize", *["minimize"] * (len(names) - 1)])
        study.set_metric_names(names)
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("n_params", 120)
        study.tell(trial, [0.9, 0.001, 120][: len(names)])
        assert list(front_rows(study)[0]) == expected


def test_latencies_read_in_one_unit_per_study() -> None:
    """µs while the front's median latency is under 1 ms (LiteRT's small models), ms above; the
    table's latency columns named after their unit, the rows' values (pareto.csv) untouched."""
    from tradeoff_search.front import MICROSECONDS, MILLISECONDS, format_table, in_microseconds, latency_unit

    assert latency_unit([0.0005969, 0.0006055, 2.0]) is MICROSECONDS
    assert latency_unit([0.0005969, 2.0, 3.5]) is MILLISECONDS
    assert latency_unit([]) is MICROSECONDS
    assert in_microseconds(0.00066489995652) == 0.6649
    rows = [{"trial": 3, "latency_ms": 0.0005969, "latency_retimed_ms": 0.0006197, "accuracy": 0.93},
            {"trial": 8, "latency_ms": 0.0006055, "latency_retimed_ms": None, "accuracy": 0.96}]  # fmt: skip
    header, first, second = format_table(rows).splitlines()
    assert header.split() == ["trial", "latency_µs", "latency_retimed_µs", "accuracy"]
    assert first.split() == ["3", "0.5969", "0.6197", "0.93"] and second.split() == ["8", "0.6055", "0.96"]
    assert rows[0]["latency_ms"] == 0.0005969
    assert format_table([{"trial": 1, "latency_ms": 12.5}]).splitlines()[0].split() == ["trial", "latency_ms"]


@pytest.mark.parametrize("names", [["accuracy", "latency_ms"], ["accuracy", "latency_ms", "params"]])
def test_the_front_page_names_each_trial(names: list[str]) -> None:
    """pareto_front.html: Optuna's front (3-D for three objectives), a point per trial whose data is
    its number and whose hover names it, latency in µs; plotly.js inside, the hypervolume below."""
    from tradeoff_search.front import Front
    from tradeoff_search.tracking._front_plot import front_figure, front_page

    study = optuna.create_study(directions=["maximize", *["minimize"] * (len(names) - 1)])
    study.set_metric_names(names)
    for number in range(6):
        trial = study.ask()
        trial.suggest_categorical("family", ["mlp", "cnn1d"])
        trial.set_user_attr("n_params", 100 + number)
        study.tell(trial, [0.5 + number / 20, 0.0006 + (number % 3) / 1e4, 100 + number][: len(names)])
    front = Front.of(study).with_retimed({1: 0.00055})
    figure = front_figure(study, front)
    assert {trace.type for trace in figure.data} == {"scatter" if len(names) == 2 else "scatter3d"}
    assert sorted(n for trace in figure.data for n in trace.customdata) == list(range(6))
    for trace in figure.data:
        for number, hover in zip(trace.customdata, trace.text, strict=True):
            trial = study.trials[number]
            assert hover.startswith(f"trial {number}<br>{trial.params['family']}, {100 + number} params<br>")
            assert f"latency {trial.values[1] * 1e3:.4g} µs" in hover
            assert ("re-timed 0.55 µs" in hover) == (number == 1)
    page = front_page(study, front, [0.0, 100.0, 1000.0][: len(names)])
    assert page.count('class="plotly-graph-div"') == 2 and "Hypervolume" in page and len(page) > 3_000_000


def test_the_callback_refuses_a_study_it_cannot_record(mlflow_store) -> None:
    """Before anything is logged: one objective, a reference point of the wrong length, a second study."""
    uri = mlflow_store()
    single = optuna.create_study(study_name="single")
    single.tell(single.ask(), 1.0)
    with pytest.raises(ValueError, match="study 'single': expected a multi-objective study, got 1 objective"):
        MLflowParetoCallback(tracking_uri=uri)(single, single.trials[-1])
    first, second = (optuna.create_study(study_name=n, directions=["maximize", "minimize"]) for n in ("a", "b"))
    for study in (first, second):
        study.tell(study.ask(), [0.5, 1.0])
    with pytest.raises(
        ValueError, match=r"hypervolume_reference=\[0.0, 2.0, 1.0\]: expected one number for each of the 2"
    ):
        MLflowParetoCallback(tracking_uri=uri, hypervolume_reference=[0.0, 2.0, 1.0])(first, first.trials[-1])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="one-study")
    callback(first, first.trials[-1])
    with pytest.raises(ValueError, match="study 'b': this callback records study 'a'; make one callback per study"):
        callback(second, second.trials[-1])
    assert _runs(MlflowClient(uri), "one-study")[1][0].data.tags["optuna.study"] == "a"
    assert MlflowClient(uri).get_experiment_by_name("single") is None


@pytest.mark.parametrize("value", ["o'neil \\ and x", 'say "hi"', "ends in \\", "a' and tags.`t` = 'b", "x"])
def test_filter_values_find_exactly_their_run(mlflow_store, value: str) -> None:
    """MLflow's filter parser unescapes nothing: each value is quoted so it reads back as itself."""
    client = MlflowClient(mlflow_store())
    experiment = client.create_experiment("quoting")
    decoys = ["x'", "a", "b", "o'neil", "ends in ", ""]
    runs = {v: client.create_run(experiment, tags={"t": v}).info.run_id for v in [value, *decoys] if v != value or v}
    found = client.search_runs([experiment], f"tags.`t` = {filter_value(value)} and attributes.status = 'RUNNING'")
    assert [r.info.run_id for r in found] == [runs[value]]


def test_a_value_with_both_quotes_cannot_be_a_filter() -> None:
    with pytest.raises(ValueError, match="both kinds of quotes"):
        filter_value("""it's "x\"""")


def test_the_front_plot_rings_quantized_trials() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms"])
    modes = optuna.distributions.CategoricalDistribution(["none", "dynamic", "int8"])
    for mode, values in [("none", [0.9, 0.002]), ("int8", [0.88, 0.001]), ("dynamic", [0.5, 0.003])]:
        study.add_trial(optuna.trial.create_trial(params={"quantization": mode}, values=values,
                                                  distributions={"quantization": modes}))  # fmt: skip
    _, labels = _front_figure(study).axes[0].get_legend_handles_labels()
    assert "quantized: int8" in labels and "quantized: dynamic" in labels and "quantized: float16" not in labels


@pytest.mark.e2e
def test_sync_repairs_what_a_killed_worker_left(tmp_path: Path, mlflow_store) -> None:
    """Trial 0's worker died after creating its run (RUNNING, nothing logged); trial 1's after
    the trial finished, before its run existed. Both left their staged models on disk."""
    import keras

    staging, uri = tmp_path / "staging", mlflow_store()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=["maximize", "minimize"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="crash", log_models="all", model_dir=staging)
    callback.start(study)
    for units in (2, 3):
        trial = study.ask()
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units), keras.layers.Dense(3)])
        stage_model(trial, model, staging)
        study.tell(trial, [units / 10, units / 1000])
    client = MlflowClient(uri)
    parent = study.user_attrs[PARENT_RUN_ATTR]
    tags = {"mlflow.parentRunId": parent, "optuna.role": "trial", "optuna.trial": "0"}
    half = client.create_run(callback._runs.experiment_id(study), tags=tags).info.run_id

    fresh = callback.sync(study)  # just finished: the RUNNING run may still be being written
    assert (fresh.pending, fresh.half_written, fresh.logged, fresh.models) == ([0], [], [1], [])
    report = MLflowParetoCallback(tracking_uri=uri, experiment="crash", log_models="all", model_dir=staging).sync(
        study, grace_seconds=0
    )
    assert (report.half_written, report.logged, report.models) == ([0], [0], [0, 1])
    assert "finished half-written runs (trials 0)" in str(report)
    assert client.get_run(half).info.lifecycle_stage == "deleted"
    runs = client.search_runs([callback._runs.experiment_id(study)], "tags.`optuna.role` = 'trial'")
    assert sorted(r.data.tags["optuna.trial"] for r in runs) == ["0", "1"]
    for run in runs:
        assert run.info.status == "FINISHED" and "accuracy" not in run.data.metrics  # objective_0/1 here
        trial = study.trials[int(run.data.tags["optuna.trial"])]
        for name, artifact in RUN_FILES.items():
            path = client.download_artifacts(run.info.run_id, artifact, str(tmp_path / run.info.run_id))
            assert file_digest(Path(path)) == trial.user_attrs[MODEL_DIGESTS_ATTR][name]
    assert not any(staging.iterdir())
    assert str(callback.sync(study, grace_seconds=0)) == "nothing to repair"


def test_sync_removes_the_variant_files_a_killed_worker_staged(tmp_path: Path, mlflow_store) -> None:
    """A trained model's quantization variants are staged under provisional names until they are
    added as trials (see _variants). Trial 0's worker was killed after telling its trial, before
    adding its variant; trial 1's before telling it (failed as the pool fails it); trial 2's is
    alive, between the two. sync removes the dead workers' variant files, which nobody will add,
    and keeps the live one's; once that worker added its variant and ended, sync logs the
    variant's model and the staging folder is empty."""
    import subprocess

    import keras

    from tradeoff_search.cost._convert import to_tflite
    from tradeoff_search.study._loop import fail_trials_of, worker_id
    from tradeoff_search.trial._staging import provisional_dir, stage
    from tradeoff_search.trial._variants import Variant, add_variants

    staging, uri = tmp_path / "staging", mlflow_store()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=["maximize", "minimize"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="killed", log_models="all", model_dir=staging)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    flatbuffer, modes = to_tflite(model), optuna.distributions.CategoricalDistribution(["none", "int8"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        variants = []
        for number, pid in enumerate([dead.pid, dead.pid, alive.pid]):
            trial = study.ask({"quantization": modes})
            study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker_id(pid))
            mode = "int8" if trial.params["quantization"] == "none" else "none"
            staged = provisional_dir(staging, number, mode)
            variants.append(Variant(mode, (0.8, 0.001), {MODEL_DIGESTS_ATTR: stage(staged, model, flatbuffer)}, {},
                                    staged))  # fmt: skip
            if number != 1:
                study.tell(trial, [0.9, 0.002])
        assert fail_trials_of(study, worker_id(dead.pid), "worker process ended (SIGKILL)") == [1]
        assert sorted(path.name for path in staging.iterdir()) == [f"variant-0000-{variants[0].mode}",
                                                                   f"variant-0001-{variants[1].mode}",
                                                                   f"variant-0002-{variants[2].mode}"]  # fmt: skip
        report = callback.sync(study)
        assert [path.name for path in staging.iterdir()] == [f"variant-0002-{variants[2].mode}"]
        assert str(report) == "logged missing runs (trials 0, 1, 2); removed 2 leftover staging folders (trials 0, 1)"
        assert add_variants(study, study.trials[2], variants[2:]) == [3]  # the live worker, after sync
    finally:
        alive.kill()
        alive.wait()
    assert callback.sync(study).models == [3]
    assert not any(staging.iterdir())


def test_sync_removes_staged_files_no_run_will_take(tmp_path: Path, mlflow_store) -> None:
    """Trial 0's worker was killed after the callback logged its run with the model, before it
    removed the staged copies: sync removes them and leaves the run as it was. Trial 1's worker
    was killed before logging its run, and its staged files are not those it recorded: sync logs
    the run without them, removes them and says so."""
    import shutil

    import keras

    from tradeoff_search.cost._convert import to_tflite

    staging, uri = tmp_path / "staging", mlflow_store()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=["maximize", "minimize"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="leftovers", log_models="all", model_dir=staging)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    flatbuffer = to_tflite(model)
    for values in ([0.9, 0.002], [0.8, 0.001]):
        trial = study.ask()
        stage_model(trial, model, staging, flatbuffer)
        study.tell(trial, values)
    (staging / "trial-0001" / "model.tflite").write_bytes(flatbuffer[:-1] + b"\0")  # a bit flipped on disk
    shutil.copytree(staging / "trial-0000", tmp_path / "copy")
    callback(study, study.trials[0])  # logs the run and its model, then removes the staged folder
    (tmp_path / "copy").rename(staging / "trial-0000")  # as if killed before that removal
    client = MlflowClient(uri)
    run = callback._runs.child_runs(study)[0]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}

    report = callback.sync(study, grace_seconds=0)
    assert (report.logged, report.half_written, report.models, report.discarded) == ([1], [], [], [1])
    assert report.leftovers == [0]
    assert str(report) == (
        "logged missing runs (trials 1); "
        "discarded staged files that did not match their trial's recorded digests (trials 1); "
        "removed 1 leftover staging folder (trials 0)"
    )
    assert not any(staging.iterdir())
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == artifacts == {"model", "tflite"}
    runs = callback._runs.child_runs(study)
    assert runs[0].info.run_id == run.info.run_id and client.list_artifacts(runs[1].info.run_id) == []
    assert callback.missing(study) == {"no model": [1]}  # what it recorded is nowhere: nothing sync can do


def test_missing_names_what_the_record_lacks_and_a_dead_writer_is_repaired_at_once(
    tmp_path: Path, mlflow_store
) -> None:
    """Two trials whose runs were left RUNNING: trial 0's process (on this machine) has ended,
    so sync repairs its run at once; trial 1's writer is unknown, so its run may still be written."""
    import socket
    import subprocess

    uri = mlflow_store()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=["maximize", "minimize"])
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="lacks")
    callback.start(study)
    dead = subprocess.Popen(["true"])
    dead.wait()
    client = MlflowClient(uri)
    for number, values in enumerate([[0.9, 0.2], [0.5, 0.1]]):
        trial = study.ask()
        if number == 0:
            study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, f"{socket.gethostname()}:{dead.pid}")
        study.tell(trial, values)
        tags = {"mlflow.parentRunId": study.user_attrs[PARENT_RUN_ATTR], "optuna.role": "trial",
                "optuna.trial": str(number)}  # fmt: skip
        client.create_run(callback._runs.experiment_id(study), tags=tags)
    assert may_be_writing(study.trials[0]) is False and may_be_writing(study.trials[1]) is None
    assert callback.missing(study) == {"the study's run unfinished": [], "an unfinished run": [0, 1],
                                       "an outdated pareto tag": [0, 1]}  # fmt: skip
    report = callback.sync(study)
    assert (report.half_written, report.pending) == ([0], [1])
    assert callback.missing(study) == {"an unfinished run": [1]}


def test_a_worker_is_its_host_boot_pid_and_start_not_its_host_name_alone(tmp_path: Path) -> None:
    """A live pid on this machine is the trial's worker only if it started when the worker did,
    in this boot: another host of the same name, or a pid handed out again, is not it."""
    import socket
    import subprocess

    from tradeoff_search.process import process_identity
    from tradeoff_search.record._keys import WORKER_PROCESS_ATTR

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=["maximize", "minimize"])
    alive = subprocess.Popen(["sleep", "60"])
    try:
        identity = process_identity(alive.pid)
        assert identity is not None
        boot, start = identity.split()
        for recorded in (identity, f"{boot} {int(start) + 1}", f"another-boot {start}", None):
            trial = study.ask()
            study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, f"{socket.gethostname()}:{alive.pid}")
            if recorded is not None:
                study._storage.set_trial_system_attr(trial._trial_id, WORKER_PROCESS_ATTR, recorded)
            study.tell(trial, [0.5, 0.1])
        # its worker; its pid taken by another process; another machine's; a trial from before #33
        assert [may_be_writing(t) for t in study.trials] == [True, False, None, True]
    finally:
        alive.kill()
        alive.wait()
    assert [may_be_writing(t) for t in study.trials] == [False, False, None, False]


def test_sync_times_its_grace_period_from_the_utc_time_its_worker_recorded(tmp_path: Path) -> None:
    """Optuna's storage hands out naive local times: in the hour that repeats when daylight saving
    time ends, one reads an hour early (in Paris, 2026-10-25 01:30 UTC is the second 02:30), and
    sync would take a run still being written for half-written. The UTC time a worker records is
    exact, whatever the time zone."""
    import os
    import subprocess
    import sys

    script = """
import datetime, sys, optuna
from tradeoff_search.record._keys import FINISHED_ATTR
from tradeoff_search.study._loop import work
from tradeoff_search.tracking._repair import finished_at
study = optuna.create_study(storage=sys.argv[1], directions=["maximize", "minimize"])
told = datetime.datetime(2026, 10, 25, 1, 30, tzinfo=datetime.UTC)
for recorded in ({FINISHED_ATTR: told.isoformat()}, None):  # by a worker; by Optuna alone (before #33)
    trial = optuna.trial.create_trial(values=[0.5, 1.0], system_attrs=recorded)
    trial.datetime_complete = told
    study.add_trial(trial)
study.enqueue_trial({})
work(study, lambda trial: (0.5, 1.0), storage_url=sys.argv[1])  # told now by this worker
print(*(finished_at(trial).isoformat() for trial in study.trials))
"""
    paris = {**os.environ, "TZ": "Europe/Paris"}
    done = subprocess.run([sys.executable, "-c", script, f"sqlite:///{tmp_path}/optuna.db"], env=paris,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    recorded, naive, now = done.stdout.split()
    assert (recorded, naive) == ("2026-10-25T01:30:00+00:00", "2026-10-25T00:30:00+00:00")
    assert now.endswith("+00:00")
