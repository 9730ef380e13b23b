from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent

# What the user's machine holds must play no part in a test (#30): stores named by the environment
# (the suite wrote its studies into them), its Keras and matplotlib settings (a keras.json with
# float16 or channels_first failed 27 tests, a matplotlibrc with usetex one), its http_proxy (the
# tests' own servers on 127.0.0.1 were asked through it), and the user's latency lock (a study of
# theirs training made every timing test wait for it). Set once in the controller; xdist's workers
# and every process a test starts inherit it.
_HOST_PREFIXES = ("MLFLOW_", "TRADEOFF_SEARCH_")
_HOST_NAMES = ("KERAS_BACKEND", "MPLBACKEND")
_KEPT = ("TRADEOFF_SEARCH_TEST_POSTGRES",)
_PRIVATE_DIRS = {"XDG_RUNTIME_DIR": "run", "KERAS_HOME": "keras", "MPLCONFIGDIR": "matplotlib"}
_HOME = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: its controller has done it
        return
    for name in [n for n in os.environ if n.startswith(_HOST_PREFIXES) or n in _HOST_NAMES]:
        if name not in _KEPT:
            del os.environ[name]
    for name in ("no_proxy", "NO_PROXY"):  # a proxy of the machine's would take requests to 127.0.0.1
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))
    home = Path(tempfile.mkdtemp(prefix="tradeoff-search-tests-"))
    config.stash[_HOME] = home
    for name, folder in _PRIVATE_DIRS.items():
        (home / folder).mkdir(mode=0o700)
        os.environ[name] = str(home / folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HOME in config.stash:
        shutil.rmtree(config.stash[_HOME], ignore_errors=True)


# A spec small enough for tests: tiny MLPs, two epochs.
TINY_SPEC = """
[study]
name = "tiny"
n_trials = 3
seed = 1

[data]
source = "sklearn:iris"

[latency]
max_seconds = 0.2

[model]
n_layers = [1, 2]
units = [4, 16]

[training]
batch_size = [16, 32]
max_epochs = 2
patience = 1
"""


def png_header(width: int, height: int) -> bytes:
    """A PNG file that claims ``width`` × ``height`` grayscale pixels and holds none: a few bytes
    that decode to gigabytes (a decompression bomb), or to an error once decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_served(server: subprocess.Popen[bytes], log: Path, url: str, what: str, seconds: float) -> None:
    """Poll ``url`` until it answers 2xx; fail with the end of the server's log if it exits or stays silent."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"{what} exited with {server.returncode}:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        assert time.monotonic() < deadline, f"{what} silent on {url} for {seconds} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (the UI, mlflow, its uvicorn workers); wait 20 s for all of it, then SIGKILL."""
    deadline = time.monotonic() + 20
    with contextlib.suppress(ProcessLookupError):  # raised once no process of the group is left
        os.killpg(process.pid, signal.SIGTERM)
        while time.monotonic() < deadline:
            process.poll()  # reap our own child: a zombie would keep the group alive
            os.killpg(process.pid, 0)
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec file into the test's temp dir and return its path."""

    def write(text: str = TINY_SPEC, name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@dataclass(frozen=True)
class FinishedStudy:
    """A study run by the CLI in ``folder`` (its default stores in ``folder/mlruns``), and what ``run`` printed."""

    folder: Path
    stdout: str


@pytest.fixture(scope="session")
def tiny_cli_study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    """``run spec.toml`` of TINY_SPEC (3 trials, one worker process), once for every test that reads it.

    Shared: a test may add to it only what keeps its trials and runs as they are (resuming it,
    syncing it, selecting from it: which the test of those commands asserts); anything else works
    on a study of its own.
    """
    folder = tmp_path_factory.mktemp("tiny-cli-study")
    (folder / "spec.toml").write_text(textwrap.dedent(TINY_SPEC), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--no-progress"],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return FinishedStudy(folder, done.stdout)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the temp dir, so the default ``mlruns/`` stores land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# A table's text column: 7 cities, 3 of them rare.
CITIES = ["paris"] * 6 + ["lyon"] * 5 + ["nice"] * 4 + ["lille"] * 3 + ["brest", "metz", "albi"]


def table_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Numbers, a text column of 7 cities (3 rare), a yes/no column, and a label that depends on all."""
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, rows)
    plan = rng.choice(["basic", "gold"], rows)
    age = rng.normal(40, 12, rows).round(1)
    label = np.where((city == "paris") | (plan == "gold") & (age > 40), "churned", "stayed")
    return pd.DataFrame({"age": age, "city": city, "plan": plan, "income": rng.normal(3, 1, rows).round(3),
                         "label": label})  # fmt: skip


def litert_outputs(tflite_path: str | Path, x: np.ndarray) -> np.ndarray:
    """What LiteRT's interpreter outputs for the rows ``x`` with the model in ``tflite_path``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store whose tables MLflow itself created, once a session: creating
    them (alembic's migrations) takes 2-5 s on 2 cores, copying the file a few ms."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates the tables, and commits
    return path


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A real MLflow tracking server on 127.0.0.1:``port`` (SQLite backend and served artifacts in
    ``folder``, the same after a restart), answering; stop it with :func:`stop_group`."""
    log = folder / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("a") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{folder}/server.db", "--serve-artifacts",
             "--artifacts-destination", str(folder / "server-artifacts")],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_served(server, log, f"http://127.0.0.1:{port}/health", "mlflow server", seconds=90)
    except BaseException:
        stop_group(server)
        raise
    return server


@pytest.fixture
def mlflow_store(migrated_mlflow_db: Path, tmp_path: Path) -> Callable[..., str]:
    """A real MLflow SQLite store at ``tmp_path / name`` (its tables already made; for the tests
    that do not test their creation, which every CLI study on a fresh folder does), as a URI."""

    def make(name: str = "mlflow.db") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_mlflow_db, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture
def mlflow_server(tmp_path: Path, migrated_mlflow_db: Path) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 (SQLite backend, served artifacts); yields its URL."""
    port = free_port()
    shutil.copyfile(migrated_mlflow_db, tmp_path / "server.db")  # its tables made: the server starts sooner
    server = start_mlflow_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(server)


def command_lines(root: int) -> list[str]:
    """The command lines of process ``root`` and all its descendants, as ``ps`` shows them to
    every user of the machine (``/proc/PID/cmdline``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            children.setdefault(int(stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1]), []).append(
                int(stat.parent.name)
            )
    lines, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        with contextlib.suppress(OSError):
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return lines
