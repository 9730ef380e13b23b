"""The latency server (``device serve``) as a real process on 127.0.0.1, and its client."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tradeoff_search import measure_latency
from tradeoff_search.cost._device_client import DeviceBackend, DeviceUnreachable
from tradeoff_search.cost._harness import _MIN_BLOCKS, _MIN_DECISION_BLOCKS, Setting
from tradeoff_search.cost._reference import reference_flatbuffer
from tradeoff_search.rules import TOKEN_ENV, check_device_url

TOKEN = "s3cret-device-token-0123456789"
HEAVY = ("tensorflow", "keras", "mlflow", "optuna", "sklearn", "scipy", "pandas")


class Server:
    """``python -m tradeoff_search device serve`` on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path, *flags: str, env: dict[str, str] | None = None, **popen: Any) -> None:
        self.log = tmp / f"server-{time.monotonic_ns()}.log"
        self.errors = self.log.with_suffix(".err")
        command = [sys.executable, "-m", "tradeoff_search", "device", "serve", "--port", "0", *flags]
        with self.log.open("wb") as out, self.errors.open("wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, **(env or {})}, **popen)
        deadline = time.monotonic() + 60
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)", self.log.read_text())):
            assert self.process.poll() is None, self.errors.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
        response = connection.getresponse()
        answer = response.status, response.read().decode()
        connection.close()
        return answer

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.log.read_text() + self.errors.read_text()


def token_file(directory: Path, token: str = TOKEN) -> Path:
    """``token`` in a file only its owner may read, as the server requires."""
    path = directory / "token"
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("device")
    running = Server(tmp, "--token-file", str(token_file(tmp)), "--max-mb", "1", "--client-timeout", "1",
                     env={"PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    yield running
    output = running.stop()
    assert TOKEN not in output  # never logged, whatever it was sent
    # What the server and its timing process imported (-X importtime, inherited by the child):
    imported = {line.rpartition("|")[2].strip().split(".")[0] for line in output.splitlines() if "import time:" in line}
    assert "ai_edge_litert" in imported and "numpy" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def test_a_model_is_timed_on_the_server_with_its_fingerprint(server: Server, token: None) -> None:
    device = DeviceBackend(server.url)
    assert device.fingerprint()["logical_cores"] == os.cpu_count()
    (stats,) = device.measure([reference_flatbuffer()], Setting(max_seconds=0.2))
    assert stats.device == server.url and stats.runtime == "litert" and stats.reference_p10_ms is not None
    assert 0.5 < stats.p10_ms / stats.reference_p10_ms < 2  # the reference against itself
    assert stats.model_bytes == len(reference_flatbuffer())
    # A latency budget's early stop works there too: the reference is surely over half itself, decided
    # from the first rounds it may decide in (a few more on a loaded machine), long before the
    # rounds a measurement takes otherwise.
    (early,) = device.measure([reference_flatbuffer()], Setting(max_seconds=2.0, stop_above_reference=0.5))
    assert _MIN_DECISION_BLOCKS <= early.samples < _MIN_BLOCKS
    # The public API, and a calibration: the reference alone.
    stats = measure_latency(reference_flatbuffer(), max_seconds=0.2, reference=False, device=server.url)
    assert stats.reference_p10_ms is None and stats.device == server.url


def test_the_server_measures_ram_as_a_study_does_here(server: Server, token: None) -> None:
    pytest.importorskip("tflite_micro", reason="the micro runtime has wheels for x86-64 Linux only")
    import keras

    from tradeoff_search.cost._convert import to_tflite
    from tradeoff_search.cost._memory import NotDeployable, RamMeasurement, measure_ram, measure_rams

    def mlp(activation: str) -> bytes:
        layers = [keras.layers.Dense(32, activation=activation), keras.layers.Dense(3, activation="softmax")]
        return to_tflite(keras.Sequential([keras.Input((8,)), *layers]), signature=False)

    files = [mlp("relu"), mlp("gelu")]
    there, here = measure_rams(files, server.url), [measure_ram(file) for file in files]
    assert isinstance(there[0], RamMeasurement) and isinstance(here[0], RamMeasurement)
    assert there[0].arena_bytes == here[0].arena_bytes and there[0].flash_bytes == len(files[0])
    assert isinstance(there[1], NotDeployable) and (there[1].op, there[1].stage) == ("GELU", "load")


def _not_a_model() -> bytes:
    """A valid flatbuffer with LiteRT's identifier that holds no model: no subgraph."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version, model.buffers, model.subgraphs = 3, [schema.BufferT()], []
    builder = flatbuffers.Builder(64)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _query(size: int, **extra: str) -> str:
    return "/v1/measure?" + "&".join(f"{k}={v}" for k, v in {"sizes": str(size), "max_seconds": "0.1", **extra}.items())


MODEL = reference_flatbuffer()
RANDOM = np.random.default_rng(0).bytes(5000)
BAD_REQUESTS = {  # name: (method, path, body, headers, status, words of the answer)
    "random bytes": ("POST", _query(5000), RANDOM, {}, 400, "not a LiteRT flatbuffer"),
    "random bytes with the identifier": ("POST", _query(5000), RANDOM[:4] + b"TFL3" + RANDOM[8:], {}, 422, "LiteRT"),
    "truncated model": ("POST", _query(len(MODEL) // 2), MODEL[: len(MODEL) // 2], {}, 422, "LiteRT"),
    "a flatbuffer that is not a model": ("POST", _query(len(_not_a_model())), _not_a_model(), {}, 422, "LiteRT"),
    "empty model": ("POST", _query(0), b"", {}, 400, "not a LiteRT flatbuffer"),
    "sizes and body disagree": ("POST", _query(100), MODEL[:50], {}, 400, "sizes add up to 100"),
    "no sizes": ("POST", "/v1/measure?max_seconds=0.1", MODEL, {}, 400, "sizes"),
    "too many models": ("POST", "/v1/measure?sizes=" + ",".join(["1"] * 65), b"x" * 65, {}, 400, "1 to 64"),
    "unknown statistic": ("POST", _query(len(MODEL), statistic="p99"), MODEL, {}, 400, "statistic='p99'"),
    "unknown parameter": ("POST", _query(len(MODEL), path="/etc/passwd"), MODEL, {}, 400, "unknown query parameter"),
    "zero threads": ("POST", _query(len(MODEL), threads="0"), MODEL, {}, 400, "threads=0"),
    "more threads than cores": ("POST", _query(len(MODEL), threads="4096"), MODEL, {}, 400, "cores"),
    "a year of timing": ("POST", _query(len(MODEL), max_seconds="3e7"), MODEL, {}, 400, "max_seconds <= 600"),
    "NaN seconds": ("POST", _query(len(MODEL), max_seconds="nan"), MODEL, {}, 400, "max_seconds=nan"),
    "wrong path": ("POST", "/v1/pickle", MODEL, {}, 404, "POST /v1/measure"),
    "RAM with a timing parameter": ("POST", f"/v1/ram?sizes={len(MODEL)}&t=1", MODEL, {}, 400, "parameter 't'"),
    "RAM of random bytes": ("POST", "/v1/ram?sizes=5000", RANDOM, {}, 400, "not a LiteRT flatbuffer"),
    "wrong token": ("GET", "/v1/device", b"", {"Authorization": "Bearer not-the-token"}, 403, "wrong token"),
    "missing token": ("GET", "/v1/device", b"", {"Authorization": ""}, 401, TOKEN_ENV),
    "chunked body": ("POST", _query(len(MODEL)), MODEL, {"Transfer-Encoding": "chunked"}, 411, "Content-Length"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_clear_answer_and_the_server_serves_on(server: Server, name: str) -> None:
    method, path, body, headers, status, words = BAD_REQUESTS[name]
    if "Transfer-Encoding" in headers:  # http.client would frame it; send the chunk as such
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = server.request(method, path, body, headers)
    assert answer[0] == status and words in answer[1], answer
    assert TOKEN not in answer[1]
    assert server.request("GET", "/v1/device")[0] == 200


def _raw(server: Server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(4096):  # the server closes after a refusal
            answer += chunk
        return answer


def test_oversized_slow_and_crashing_requests_leave_the_server_serving(server: Server, token: None) -> None:
    def head(size: int, length: int | None) -> bytes:
        length_line = "" if length is None else f"Content-Length: {length}\r\n"
        return f"POST {_query(size)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{length_line}\r\n".encode()

    assert b" 413 " in _raw(server, head(5 << 20, 5 << 20))  # refused before its body is read
    assert b" 411 " in _raw(server, head(100, None))
    slow = _raw(server, head(100, 100) + b"abc")  # then nothing more
    assert b" 408 " in slow and b"within 1 s" in slow  # this server's --client-timeout
    # The timing process dies (as when a flatbuffer crashes LiteRT): the next request starts another.
    device = DeviceBackend(server.url)
    device.measure([MODEL], Setting(max_seconds=0.1))
    children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)
    proc = Path(f"/proc/{children[0]}")
    while "State:\tZ" not in (proc / "status").read_text(encoding="utf-8") or len(list((proc / "task").iterdir())) > 1:
        time.sleep(0.01)  # until all its threads are gone: dead, not yet reaped
    (stats,) = device.measure([MODEL], Setting(max_seconds=0.1))
    assert stats.p10_ms > 0


def test_the_client_refuses_bad_urls_and_retries_a_lost_server(token: None) -> None:
    for url in ("ftp://x:1", "http://x", "http://user:pw@x:1", "http://x:1/path", "x:1"):
        with pytest.raises(ValueError, match="http://HOST:PORT"):
            check_device_url(url)
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(DeviceUnreachable, match=f"127.0.0.1:{port} unreachable after 2 attempts") as caught:
        DeviceBackend(f"http://127.0.0.1:{port}", retries=1).fingerprint()
    assert time.perf_counter() - start >= 1.0  # one retry, a second later
    assert TOKEN not in str(caught.value)
    with pytest.raises(ValueError, match=r"device='http://127\.0\.0\.1:1'.*runtime='litert'"):
        measure_latency(MODEL, runtime="tf", device="http://127.0.0.1:1")


def test_a_server_restarted_within_the_retries_costs_a_measurement_nothing(tmp_path: Path, token: None) -> None:
    first = Server(tmp_path, "--token-file", str(token_file(tmp_path)))
    first.process.kill()  # SIGKILL, as a crash or a power cut; back on the same port a second later
    first.process.wait()
    restarted: list[Server] = []
    later = threading.Timer(1.0, lambda: restarted.append(
        Server(tmp_path, "--token-file", str(tmp_path / "token"), "--port", str(first.port))))  # fmt: skip
    later.start()
    try:
        (stats,) = DeviceBackend(first.url).measure([MODEL], Setting(max_seconds=0.2, reference=False))
    finally:
        later.join()
        output = restarted[0].stop()
    assert stats.p10_ms > 0 and stats.device == first.url
    assert "POST /v1/measure" in output and TOKEN not in output


def test_the_server_binds_beyond_loopback_only_with_a_token(tmp_path: Path) -> None:
    def serve(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tradeoff_search", "device", "serve", "--port", "0", *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    refused = serve("--host", "0.0.0.0")
    assert (
        refused.returncode == 2
        and refused.stderr == "error: --host 0.0.0.0: serving beyond this machine needs --token-file\n"
    )
    missing = serve("--token-file", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "--token-file" in missing.stderr and "absent" in missing.stderr
    (tmp_path / "short").write_text("abc", encoding="utf-8")
    (tmp_path / "short").chmod(0o600)
    short = serve("--token-file", str(tmp_path / "short"))
    assert short.returncode == 2 and "too weak a token" in short.stderr and "abc" not in short.stderr


def _study_spec(tmp: Path, url: str, n_trials: int) -> Path:
    from .conftest import TINY_SPEC

    text = TINY_SPEC.replace("n_trials = 3", f"n_trials = {n_trials}")
    text = text.replace("max_seconds = 0.2", f'max_seconds = 0.2\ndevice = "{url}"')
    (tmp / "spec.toml").write_text(text, encoding="utf-8")
    return tmp / "spec.toml"


def _cli(tmp: Path, *args: str, token: str | None = TOKEN, **popen: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    return subprocess.Popen([sys.executable, "-m", "tradeoff_search", *args], cwd=tmp, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]  # fmt: skip


@pytest.mark.e2e
def test_a_study_timed_on_the_server_stops_when_it_is_lost_and_resumes_when_it_is_back(
    tmp_path: Path, mlflow_store: Callable[..., str]
) -> None:
    from tradeoff_search.record._keys import DEVICE_FAILURE
    from tradeoff_search.study._device_watch import MAX_DEVICE_FAILURES

    server = Server(tmp_path, "--token-file", str(token_file(tmp_path)))
    spec = _study_spec(tmp_path, server.url, 4)
    # Unreachable or refused at the start: one line, exit 2, before the stores, data or TensorFlow.
    for token, why in ((None, "needs a token"), ("wrong-token-but-long-enough", "wrong token")):
        refused = _cli(tmp_path, "run", str(spec), "--in-process", token=token)
        err = refused.communicate(timeout=120)[1]
        assert refused.returncode == 2 and err.count("\n") == 1, err
        assert err.startswith(f'error: {spec}: latency.device = "{server.url}": expected a latency server that answers')
        assert why in err and "wrong-token" not in err and TOKEN not in err
    assert not (tmp_path / "mlruns").exists()
    mlflow_store("mlruns/mlflow.db")  # its tables made: not what this test is about

    # Killed (SIGKILL) after the calibration and the first trial's timing: the next trials fail on it
    # (after the client's retries), and after MAX_DEVICE_FAILURES in a row the study stops, exit 1, one line.
    run = _cli(tmp_path, "run", str(spec), "--in-process", "--no-progress")
    try:
        while server.log.read_text().count("POST /v1/measure") < 2:
            assert run.poll() is None, run.communicate()[1]
            time.sleep(0.05)
        server.process.kill()
        server.process.wait()
        err = run.communicate(timeout=300)[1]
    finally:
        run.kill()
    assert run.returncode == 1, err
    assert err.endswith(f"error: latency server {server.url}: the last {MAX_DEVICE_FAILURES} trials failed because "
                        "it did not answer, so the study stopped; run the same command again once it is back to "
                        "resume\n"), err  # fmt: skip
    assert TOKEN not in err
    lost = [t for t in _trials(tmp_path) if t.state.name == "FAIL"]
    assert len(lost) == MAX_DEVICE_FAILURES and all(DEVICE_FAILURE in t.user_attrs for t in lost)

    # Back (a new process on the same port): the same command resumes and completes the study.
    server = Server(tmp_path, "--token-file", str(tmp_path / "token"), "--port", str(server.port))
    try:
        resumed = _cli(tmp_path, "run", str(spec), "--in-process", "--no-progress")
        err = resumed.communicate(timeout=300)[1]
    finally:
        output = server.stop()
    assert resumed.returncode == 0, err
    assert TOKEN not in err + output
    trials = _trials(tmp_path)  # nothing lost or duplicated: 4 complete, each timed on the server
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len(trials) == 4 + MAX_DEVICE_FAILURES
    for trial in complete:
        latency = trial.user_attrs["latency"]
        assert latency["device"] == server.url and latency["reference_p10_ms"] > 0
        assert latency["cpu"] and latency["logical_cores"] == os.cpu_count()
    assert _study(tmp_path).user_attrs["latency_calibration"]["device"] == server.url

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.tags["latency.device"] == server.url and parent.data.tags["latency.cpu"]
    children = {int(r.data.tags["optuna.trial"]): r for r in runs if r is not parent}
    assert len(children) == len(runs) - 1 and set(children) >= {t.number for t in complete}
    assert {children[t.number].data.tags["latency.device"] for t in complete} == {server.url}


def _study(tmp: Path):  # type: ignore[no-untyped-def]
    import optuna

    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp}/mlruns/optuna.db")


def _trials(tmp: Path) -> list:
    return _study(tmp).get_trials()


def test_three_trials_in_a_row_without_the_server_stop_the_study_until_it_is_back() -> None:
    import optuna

    from tradeoff_search.record._keys import DEVICE_FAILURE
    from tradeoff_search.study._device_watch import MAX_DEVICE_FAILURES, device_lost

    study = optuna.create_study(directions=["maximize", "minimize"])

    def finish(lost: bool) -> None:
        trial = study.ask()
        if lost:
            trial.set_user_attr(DEVICE_FAILURE, True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, [0.9, 0.01])

    finish(False)
    for _ in range(MAX_DEVICE_FAILURES - 1):
        finish(True)
    assert not device_lost(study)
    finish(False)  # it answered again: the count starts over
    for _ in range(MAX_DEVICE_FAILURES):
        finish(True)
    assert device_lost(study)
    assert not device_lost(study, since=len(study.trials))  # a resumed run counts its own trials
