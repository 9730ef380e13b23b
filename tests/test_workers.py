"""Several workers on one study, crashes, failures: real processes, real SQLite and PostgreSQL stores.

PostgreSQL runs when TRADEOFF_SEARCH_TEST_POSTGRES holds a URL of a database the tests may write
to (.ci/run starts one); without it those cases are skipped.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import optuna
import pytest
import sqlalchemy.exc
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback

from tradeoff_search.cli._cli import main
from tradeoff_search.record._keys import WORKER_ATTR
from tradeoff_search.study._supervision import MAX_DEATHS_IN_A_ROW
from tradeoff_search.study._tickets import Tickets
from tradeoff_search.tracking._run_index import TAG_ROLE

from .conftest import TINY_SPEC, command_lines, free_port, start_mlflow_server, stop_group
from .storage_opener import open_at

pytestmark = pytest.mark.e2e

POSTGRES = os.environ.get("TRADEOFF_SEARCH_TEST_POSTGRES")
_NO_POSTGRES = "needs TRADEOFF_SEARCH_TEST_POSTGRES, a PostgreSQL database URL (.ci/postgres makes one)"
COMPLETE = optuna.trial.TrialState.COMPLETE


def _run(
    *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tradeoff_search", "run", *args, "--no-progress"],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def _mlflow_runs(tracking_uri: str, experiment: str) -> tuple[list, dict[int, object]]:
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags[TAG_ROLE] == "study"]
    children = [r for r in runs if r.data.tags[TAG_ROLE] == "trial"]
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert len(by_trial) == len(children), "a trial has two MLflow runs"
    return parents, by_trial


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.skipif(not POSTGRES, reason=_NO_POSTGRES)),
    ],
)
def test_two_workers_run_exactly_the_requested_trials(tmp_path: Path, backend: str, mlflow_store) -> None:
    name = f"workers_{uuid.uuid4().hex[:8]}"
    (tmp_path / "spec.toml").write_text(
        TINY_SPEC.replace('name = "tiny"', f'name = "{name}"').replace("n_trials = 3", "n_trials = 6"), encoding="utf-8"
    )
    storage = POSTGRES if backend == "postgres" else f"sqlite:///{tmp_path}/optuna.db"
    tracking = mlflow_store()
    # The URLs by the environment: no process of the study may show them on its command line.
    run = subprocess.Popen(
        [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--workers", "2", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "TRADEOFF_SEARCH_STORAGE": storage, "MLFLOW_TRACKING_URI": tracking},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    while run.poll() is None:
        lines += command_lines(run.pid)
        time.sleep(0.2)
    done = subprocess.CompletedProcess(run.args, run.returncode, *run.communicate())
    assert done.returncode == 0, done.stderr[-3000:]
    assert any("tradeoff_search.study._worker" in line for line in lines)  # the workers were seen
    secrets = [storage, tracking, urlsplit(storage).password or storage]
    assert not [line for line in lines if any(secret in line for secret in secrets)]

    study = optuna.load_study(study_name=name, storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 6 and sorted(numbers) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    parents, children = _mlflow_runs(tracking, name)
    assert len(parents) == 1 and sorted(children) == numbers
    tagged = {n for n, r in children.items() if r.data.tags["pareto"] == "true"}
    assert tagged == {t.number for t in study.best_trials}
    password = urlsplit(storage).password
    if password:  # never on the console, nor anywhere in the MLflow record
        assert password not in done.stdout + done.stderr
        assert all(password not in str(r.data) for r in [*parents, *children.values()])


def test_a_worker_killed_mid_trial_loses_nothing(tmp_path: Path, mlflow_store) -> None:
    # Trials long enough (~8 s) to be caught training.
    slow = TINY_SPEC.replace('source = "sklearn:iris"', 'source = "sklearn:digits"').replace(
        "max_epochs = 2", "max_epochs = 150"
    )
    slow = slow.replace("patience = 1", "patience = 150").replace("[study]", "[study]\nheartbeat_seconds = 1")
    (tmp_path / "spec.toml").write_text(slow, encoding="utf-8")
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    worker = subprocess.Popen(  # the trials run in the very process that is killed
        [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--no-progress", "--in-process"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    killed_number = None
    while time.monotonic() < deadline and killed_number is None:
        time.sleep(0.5)
        if not (tmp_path / "mlruns" / "optuna.db").exists():
            continue
        try:  # the worker may be creating the study, or holding SQLite's write lock
            study = optuna.load_study(study_name="tiny", storage=storage)
            complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except (KeyError, sqlalchemy.exc.DBAPIError):  # also the worker's half-created tables
            continue
        training = [t for t in running if "latency" in t.user_attrs]
        if complete and training:  # one trial done, the next one training: kill it now
            killed_number = training[0].number
            worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    assert killed_number is not None, "the worker never reached a second trial"
    time.sleep(2.5)  # two heartbeats of silence: the trial is stale

    done = _run("spec.toml", "--in-process", cwd=tmp_path)  # the command that was killed, again
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states[killed_number] == optuna.trial.TrialState.FAIL
    retries = [
        t
        for t in study.trials
        if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_number
    ]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == study.trials[killed_number].params  # retried as it was
    complete = [n for n, s in states.items() if s == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and len(states) == 4  # nothing lost, nothing extra
    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "tiny")
    assert len(parents) == 1 and sorted(children) == sorted(states)
    assert children[killed_number].info.status == "FAILED"


def test_a_conversion_over_its_timeout_ends_its_worker_and_fails_its_trial(
    tmp_path: Path, mlflow_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TensorFlow's converter cannot be interrupted in its process: the pool ends the worker.
    # The models have a layer of the builder's module: logged and selected with it too.
    shutil.copy(Path(__file__).with_name("user_models.py"), tmp_path / "models.py")
    spec = (
        TINY_SPEC.replace("n_trials = 3", "n_trials = 2")
        .replace("[latency]", "[latency]\nconversion_timeout = 5")
        .replace("[model]", '[model]\nbuilder = "models.py:slow_to_convert_first"')
    )
    (tmp_path / "spec.toml").write_text(spec, encoding="utf-8")
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    done = _run("spec.toml", "--workers", "1", cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "(1 complete, 1 failed trials)" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == (  # a failed trial frees its place for the next run
        "error: the study has 1 of its 2 trials (failed ones free their place); "
        "run the same command again to run the missing ones"
    )
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    slow, quick = study.trials
    assert slow.state == optuna.trial.TrialState.FAIL and quick.state == COMPLETE  # by a fresh worker
    why = "the conversion to LiteRT (none) did not finish within 5 s"
    assert slow.user_attrs["fail_reason"] == f"{why}: its worker process was ended"
    assert (slow.datetime_complete - slow.datetime_start).total_seconds() < 60  # not the ten minutes
    assert slow.system_attrs[WORKER_ATTR] != quick.system_attrs[WORKER_ATTR]
    assert len(study.trials) == 2  # not retried: its parameters would take as long again
    assert f"{why} (trial 0, failed); ended, and a fresh one takes over" in done.stdout

    _, children = _mlflow_runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "tiny")
    artifacts = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").list_artifacts(children[1].info.run_id)
    assert {"model", "tflite"} <= {a.path for a in artifacts}
    monkeypatch.chdir(tmp_path)  # stores named in full: MLflow keeps one engine per URI, whatever the folder
    stores = [
        "--storage",
        f"sqlite:///{tmp_path}/mlruns/optuna.db",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlruns/mlflow.db",
    ]
    assert main(["select", "spec.toml", "--out", "chosen", *stores]) == 0
    assert (tmp_path / "chosen" / "model.keras").is_file()


def test_workers_started_together_on_a_fresh_storage_all_open_it(tmp_path: Path) -> None:
    # Each one creates Optuna's tables and stamps their version unless another did; without a
    # retry, at least one of four failed with an IntegrityError in 4 of 10 such rounds.
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        for round_ in range(4):  # 2 s for the pool's processes to start, then 0.5 s to hand each its task
            url, start = f"sqlite:///{tmp_path}/optuna-{round_}.db", time.time() + (2 if round_ == 0 else 0.5)
            assert pool.starmap(open_at, [(url, start)] * 4) == ["opened"] * 4


def _huge_features(tmp_path: Path, activation: str) -> str:
    """A spec whose unscaled features are finite but huge: relu models overflow, their loss is NaN."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "huge.npz", x=rng.uniform(1e37, 3e38, size=(60, 4)).astype(np.float32), y=np.arange(60) % 2)
    spec = TINY_SPEC.replace('source = "sklearn:iris"', 'source = "npz:huge.npz"\nscaling = "none"')
    return spec.replace("units = [4, 16]", f"units = [4, 16]\nactivation = {activation}")


def test_a_study_where_every_trial_fails_exits_1_with_a_summary(tmp_path: Path, mlflow_store) -> None:
    (tmp_path / "spec.toml").write_text(_huge_features(tmp_path, '"relu"'), encoding="utf-8")
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    done = _run("spec.toml", "--in-process", cwd=tmp_path)  # worker processes: the planted-failure test below
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "(0 complete, 3 failed trials)" in done.stdout
    assert "error: no trial completed; trial 0 failed: " in done.stderr and "diverged" in done.stderr
    _, children = _mlflow_runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "tiny")
    assert all(r.info.status == "FAILED" and "diverged" in r.data.tags["error"] for r in children.values())


PLANTED_BUILDER = """
import keras


def _deep_inside_the_builder():
    raise ValueError("")  # a message that says nothing


def flaky(trial, input_shape, n_classes):
    if len(trial.study.directions) > 1:  # a trial of the study, not the check before it opens
        _deep_inside_the_builder()
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(n_classes, activation="softmax")])
"""

PLANTED_SPEC = """
[study]
name = "planted"
n_trials = 1

[data]
source = "sklearn:iris"

[latency]
max_seconds = 0.2

[model]
builder = "planted.py:flaky"

[training]
max_epochs = 1
"""

TENSORFLOW_START_UP = ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "XNNPACK delegate")


def test_a_failed_trial_leaves_its_traceback_in_the_worker_log_and_on_its_run(tmp_path: Path, mlflow_store) -> None:
    """A default run (one worker process): the console names the worker logs and holds none of
    TensorFlow's start-up lines; the traceback of a useless message is in the log and in MLflow."""
    (tmp_path / "planted.py").write_text(PLANTED_BUILDER, encoding="utf-8")
    (tmp_path / "spec.toml").write_text(PLANTED_SPEC, encoding="utf-8")
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    done = _run("spec.toml", cwd=tmp_path)
    console = done.stdout + done.stderr
    assert done.returncode == 1, console[-3000:]
    assert "error: no trial completed; trial 0 failed: " in done.stderr
    assert "(tracebacks: the worker logs in mlruns/logs/planted)" in done.stderr
    assert [line for line in console.splitlines() if any(s in line for s in TENSORFLOW_START_UP)] == []

    logs = sorted((tmp_path / "mlruns" / "logs" / "planted").glob("worker-*.log"))
    assert len(logs) == 1
    log = logs[0].read_text(encoding="utf-8")
    assert "trial 0 failed: " in log and "Traceback" in log and "in _deep_inside_the_builder" in log
    assert any(s in log for s in TENSORFLOW_START_UP)  # kept, where it does not drown the console

    _, children = _mlflow_runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "planted")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    traceback = Path(client.download_artifacts(children[0].info.run_id, "traceback.txt", str(tmp_path))).read_text(
        encoding="utf-8"
    )
    assert traceback.startswith("Traceback") and "in _deep_inside_the_builder" in traceback


def test_tickets_are_queued_as_needed_and_never_past_n_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="tickets")
    tickets = Tickets(study, 5, storage)
    assert tickets.left == 5 and not study.trials  # nothing queued up front
    assert tickets(3) == 3 and tickets(10) == 2 and tickets() == 0
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 5
    assert Tickets(study, 5, storage).left == 0  # a second run joining finds the study full
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert Tickets(study, 5, storage)() == 1  # a failed trial's slot goes to the next run


def test_a_timeout_study_with_a_huge_n_trials_starts_at_once(tmp_path: Path, mlflow_store) -> None:
    (tmp_path / "spec.toml").write_text(
        TINY_SPEC.replace("n_trials = 3", "n_trials = 1000000\ntimeout = 1"), encoding="utf-8"
    )
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    start = time.monotonic()
    done = _run("spec.toml", "--in-process", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - start < 120  # queueing a million tickets up front would take over an hour
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    assert 1 <= len(study.trials) < 50
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_sigterm_keeps_finished_trials_completes_the_record_and_resumes(tmp_path: Path, mlflow_store) -> None:
    """SIGTERM to run alone (kill, a scheduler) stops it as Ctrl-C in a terminal does, which reaches
    the whole process group: run interrupts its worker, and no process of the study is left."""
    (tmp_path / "spec.toml").write_text(
        TINY_SPEC.replace("max_epochs = 2\npatience = 1", "max_epochs = 30\npatience = 30"), encoding="utf-8"
    )
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    command = [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--n-trials", "50", "--no-progress"]
    running = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    complete = optuna.trial.TrialState.COMPLETE
    deadline = time.time() + 300
    while time.time() < deadline and running.poll() is None:
        time.sleep(1)
        try:
            if len(optuna.load_study(study_name="tiny", storage=storage).get_trials(states=(complete,))) >= 2:
                break
        except (KeyError, sqlalchemy.exc.OperationalError):  # the study or its tables do not exist yet
            continue
    assert running.poll() is None, "run ended before Ctrl-C:\n" + "\n".join(running.communicate())[-3000:]
    tree = [line for line in command_lines(running.pid) if "tradeoff_search" in line]
    assert any("tradeoff_search.study._worker" in line for line in tree), tree
    running.send_signal(signal.SIGTERM)
    out, err = running.communicate(timeout=300)
    assert running.returncode == 130, out[-2000:] + err[-2000:]
    with pytest.raises(ProcessLookupError):  # the worker went with it: nothing left in its session
        os.killpg(running.pid, 0)
    assert "interrupted: finished trials are kept; run the same command again to resume" in err
    assert "Traceback" not in err

    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(complete) >= 2 and optuna.trial.TrialState.RUNNING not in states
    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "tiny")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}  # finished after Ctrl-C
    assert {t.number for t in study.trials if t.state == complete} <= set(children)

    done_before = states.count(complete)
    resumed = _run("spec.toml", "--n-trials", str(len(study.trials) + 1), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(optuna.load_study(study_name="tiny", storage=storage).get_trials(states=(complete,))) > done_before


def test_runs_started_together_on_fresh_sqlite_stores_finish_the_study_though_a_worker_is_killed(
    tmp_path: Path,
) -> None:
    # Each run creates the MLflow store's tables unless another did: unserialised, MLflow's
    # migrations raced ("table ... already exists", "duplicate column name") in every round of 3.
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(TINY_SPEC.replace("n_trials = 3", "n_trials = 6").replace(
        "max_epochs = 2\npatience = 1", "max_epochs = 150\npatience = 150"), encoding="utf-8")  # fmt: skip
    command = [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--no-progress"]
    runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    killed, study = None, None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and all(r.poll() is None for r in runs):
        time.sleep(0.05)
        try:
            study = study or optuna.load_study(study_name="tiny", storage=storage)
            running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except (KeyError, sqlalchemy.exc.DBAPIError):  # not created yet
            continue
        for trial in running:  # a worker process with a trial at hand, as the OOM killer finds it
            if WORKER_ATTR in trial.system_attrs:
                # The file edited mid-run: the killed worker's replacement runs the study's spec anyway.
                spec_file.write_text(
                    spec_file.read_text(encoding="utf-8").replace("units = [4, 16]", "units = [200, 300]"),
                    encoding="utf-8",
                )
                killed = int(trial.system_attrs[WORKER_ATTR].rpartition(":")[2])
                os.kill(killed, signal.SIGKILL)
                break
    outputs = [run.communicate(timeout=300) for run in runs]
    assert killed is not None, "no worker was caught with a trial:\n" + "\n".join(o[0][-1000:] for o in outputs)
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0 and "Traceback" not in err, out[-2000:] + err[-3000:]
    said = [line for out, _ in outputs for line in out.splitlines() if "ended abnormally" in line]
    assert len(said) == 1 and f"worker process {killed} ended abnormally (SIGKILL)" in said[0], said  # once

    study = optuna.load_study(study_name="tiny", storage=storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(complete) == 6 and len(study.trials) == 6 + len(failed)
    for trial in failed:  # the killed worker's trial, retried with its parameters
        assert "SIGKILL" in trial.user_attrs["fail_reason"]
        retry = [t for t in complete if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == trial.number]
        assert len(retry) == 1 and retry[0].params.items() >= trial.params.items()  # none if killed before sampling
    units = [v for t in study.trials for name, v in t.params.items() if name.startswith("units_")]
    assert units and all(4 <= v <= 16 for v in units)  # the spec the study began with, before and after the edit
    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "tiny")
    assert len(parents) == 1 and sorted(children) == [t.number for t in study.trials]


def test_a_worker_dying_at_every_start_makes_run_give_up_naming_its_log(tmp_path: Path, mlflow_store) -> None:
    # Worker processes die before they import anything (as in a broken environment); the run does not.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import os\nif b'tradeoff_search.study._worker' in open('/proc/self/cmdline', 'rb').read():\n    os._exit(3)\n",
        encoding="utf-8",
    )
    (tmp_path / "spec.toml").write_text(TINY_SPEC, encoding="utf-8")
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {MAX_DEATHS_IN_A_ROW} worker processes in a row ended abnormally"), last
    assert "(exit 3, exit 3, exit 3, exit 3)" in last and "Traceback" not in done.stderr
    log = Path(tmp_path, last.rpartition("log: ")[2])
    assert log.is_file() and log.parent == tmp_path / "mlruns" / "logs" / "tiny"


def test_an_mlflow_server_lost_mid_study_stops_it_in_one_line_and_sync_then_a_rerun_complete_it(
    tmp_path: Path, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    shutil.copyfile(migrated_mlflow_db, tmp_path / "server.db")  # its tables made: the server starts sooner
    server = start_mlflow_server(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "spec.toml").write_text(TINY_SPEC + '\n[tracking]\nlog_models = "none"\n', encoding="utf-8")
    # A password in the URL (this server ignores it) is never shown. MLflow's client would retry
    # a server that does not answer for ~4 minutes (its default).
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://me:s3cret@127.0.0.1:{port}",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # fmt: skip
    command = [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--no-progress"]
    running = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and running.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(KeyError, sqlalchemy.exc.DBAPIError):  # not created yet
                if optuna.load_study(study_name="tiny", storage=storage).get_trials(states=(COMPLETE,)):
                    break
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server stops mid-study
        server.wait()
    out, err = running.communicate(timeout=300)
    assert running.returncode == 1 and "Traceback" not in err, out[-2000:] + err[-3000:]
    line = err.strip().splitlines()[-1]
    # Connection refused, or reset or closed when the kill came in the middle of a call; under load
    # once none of these (MLflow's message then names no socket error)
    said = rf"error: MLflow: the server http://me:\*\*\*@127.0.0.1:{port} does not answer "
    assert re.match(said + r"(\((Connection|Remote end) .+?\) )?\(a worker process", line), line
    assert "s3cret" not in out + err
    assert line.endswith("complete the MLflow record with python -m tradeoff_search sync spec.toml (same stores), "
                         "then run this command again"), line  # fmt: skip
    log = tmp_path / line.partition("its log: ")[2].partition(")")[0]
    assert "Traceback" in log.read_text() and "MlflowException" in log.read_text()

    server = start_mlflow_server(tmp_path, port)  # back, on its own store
    try:
        # sync in this process (a Python and MLflow start-up less), which then holds the study
        # open while the rerun writes it: the rerun's trials were lost while sync's file check
        # closed a descriptor of the database (see stores._checks._is_sqlite_database).
        monkeypatch.chdir(tmp_path)
        assert main(["sync", "spec.toml", "--tracking-uri", env["MLFLOW_TRACKING_URI"]]) == 0, capsys.readouterr()
        assert "View run" not in capsys.readouterr().out  # MLflow's own line per run it ends
        study = optuna.load_study(study_name="tiny", storage=storage)
        complete = {t.number for t in study.get_trials(states=(COMPLETE,))}
        _, children = _mlflow_runs(url, "tiny")
        assert complete and {n for n, r in children.items() if r.info.status == "FINISHED"} >= complete
        rerun = _run("spec.toml", "--in-process", cwd=tmp_path, env=env)
        assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
        study = optuna.load_study(study_name="tiny", storage=storage)
        assert len(study.get_trials(states=(COMPLETE,))) == 3
        _, children = _mlflow_runs(url, "tiny")
        assert sorted(children) == [t.number for t in study.trials]
    finally:
        stop_group(server)
