"""The latency server against hostile clients (issue #33): real server processes on 127.0.0.1,
each attack answered as designed, and the server serving afterwards."""

from __future__ import annotations

import http.client
import http.server
import logging
import os
import re
import resource
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tradeoff_search.cost._device_client import DeviceBackend, DeviceError
from tradeoff_search.cost._harness import Setting
from tradeoff_search.device._server import MAX_BATCH_SIZE, MAX_SECONDS, default_memory_mb
from tradeoff_search.device._token import read_token
from tradeoff_search.rules import TOKEN_ENV, SpecError
from tradeoff_search.spec import StudySpec

from .test_device import MODEL, TOKEN, Server, token_file

SLOW_HEAD = b"POST /v1/measure?sizes=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # and never the blank line


def _nofile(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a token, started with 128 file descriptors (``ulimit -n 128``), two waiting
    requests at most, 8 MB bodies."""
    tmp = tmp_path_factory.mktemp("crowded")
    flags = ("--token-file", str(token_file(tmp)), "--client-timeout", "10", "--max-queue", "2", "--max-mb", "8")
    running = Server(tmp, *flags, preexec_fn=lambda: _nofile(128))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without a token (so on loopback only), 1 s for a request to arrive."""
    running = Server(tmp_path_factory.mktemp("loopback"), "--client-timeout", "1")
    yield running
    running.stop()


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _rss_bytes(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(encoding="utf-8")).group(1)) * 1024  # type: ignore[union-attr]


def _closed_by_server(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_200_slow_connections_neither_starve_an_authorized_client_nor_spin_the_server(
    crowded: Server, token: None
) -> None:
    slow = [socket.create_connection(("127.0.0.1", crowded.port)) for _ in range(200)]
    try:
        for sock in slow:
            sock.sendall(SLOW_HEAD)
        time.sleep(0.3)
        cpu = _cpu_seconds(crowded.process.pid)
        start = time.monotonic()
        (stats,) = DeviceBackend(crowded.url, retries=0).measure([MODEL], Setting(max_seconds=0.2))
        assert stats.p10_ms > 0 and time.monotonic() - start < 5
        time.sleep(1.0)
        assert _cpu_seconds(crowded.process.pid) - cpu < 0.5  # no spinning accept loop
        closed = sum(_closed_by_server(sock) for sock in slow)
        # 128 descriptors hold < 128 connections: the oldest slow ones made room, the rest are held.
        assert 200 - 128 < closed < 200, closed
    finally:
        for sock in slow:
            sock.close()
    assert "at most 96 connections at once" in crowded.log.read_text() + crowded.errors.read_text()
    assert crowded.request("GET", "/v1/device")[0] == 200


def _send_later(data: bytes, port: int, answers: list[bytes]) -> threading.Thread:
    def send() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(data)
            answers.append(sock.recv(4096))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_the_queue_is_bounded_and_waiting_bodies_stay_unread(crowded: Server) -> None:
    def head(size: int) -> bytes:
        return (f"POST /v1/measure?sizes={size}&max_seconds=0.1 HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n\r\n").encode()  # fmt: skip

    with socket.create_connection(("127.0.0.1", crowded.port), timeout=30) as first:
        first.sendall(head(len(MODEL)) + MODEL[:100])  # the timing slot waits for the rest of its body
        time.sleep(0.5)
        rss = _rss_bytes(crowded.process.pid)
        waiting: list[bytes] = []
        senders = [_send_later(head(8 * 2**20) + bytes(8 * 2**20), crowded.port, waiting) for _ in range(2)]
        time.sleep(0.5)
        assert _rss_bytes(crowded.process.pid) - rss < 4 * 2**20  # 16 MB sent, not read while they wait
        start = time.monotonic()
        answer = crowded.request("POST", "/v1/measure?sizes=10", b"x" * 10)
        assert answer[0] == 503 and "busy: 2 requests are waiting" in answer[1] and time.monotonic() - start < 2
        first.sendall(MODEL[100:])
        assert b" 200 " in first.recv(4096)
    for sender in senders:
        sender.join()
    assert all(b" 400 " in a and b"not a LiteRT flatbuffer" in a for a in waiting), waiting  # read in their turn
    assert crowded.request("GET", "/v1/device")[0] == 200


def test_requests_from_web_pages_and_rebound_hosts_are_refused(loopback: Server) -> None:
    query = f"/v1/measure?sizes={len(MODEL)}&max_seconds=0.1"
    page = {"Origin": "http://evil.example", "Content-Type": "text/plain"}  # what any page may send
    status, text = loopback.request("POST", query, MODEL, page)
    assert status == 403 and "Origin" in text
    for method, path, body in (("GET", "/v1/device", b""), ("POST", query, MODEL)):
        status, text = loopback.request(method, path, body, {"Host": f"evil.example:{loopback.port}"})
        assert status == 421 and "cpu" not in text and "evil.example" in text
    for host in (f"localhost:{loopback.port}", f"127.0.0.1:{loopback.port}", f"[::1]:{loopback.port}"):
        assert loopback.request("GET", "/v1/device", headers={"Host": host})[0] == 200
    assert loopback.request("POST", query, MODEL)[0] == 200


def _trickle(port: int, data: bytes, step: int, every: float) -> tuple[bytes, float]:
    """Send ``data`` ``step`` bytes at a time; the server's answer and when it came."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for i in range(0, len(data), step):
            if select.select([sock], [], [], every)[0]:
                break
            sock.sendall(data[i : i + step])
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer, time.monotonic() - start


def test_a_trickled_head_or_body_is_answered_408_at_the_requests_deadline(loopback: Server) -> None:
    head = f"POST /v1/measure?sizes={len(MODEL)}&max_seconds=0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    answer, seconds = _trickle(loopback.port, head + b"X-Padding: " + b"x" * 200 + b"\r\n\r\n", 4, 0.05)
    assert b" 408 " in answer and b"within 1 s" in answer and seconds < 2.5, (answer, seconds)
    request = head + f"Content-Length: {len(MODEL)}\r\n\r\n".encode() + MODEL
    answer, seconds = _trickle(loopback.port, request, 1000, 0.05)
    assert b" 408 " in answer and b"within 1 s" in answer and seconds < 2.5, (answer, seconds)
    assert loopback.request("GET", "/v1/device")[0] == 200


def test_after_a_refusal_the_connection_closes_with_its_body_unread(loopback: Server) -> None:
    inner = b"GET /v1/device HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # a body that is a request
    outer = f"POST /v1/measure?sizes={len(inner)}&statistic=p99 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as sock:
        sock.sendall(f"{outer}Content-Length: {len(inner)}\r\n\r\n".encode() + inner)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.count(b"HTTP/1.1 ") == 1 and b" 400 " in answer and b"cpu" not in answer
    # http.client keeps a connection alive unless told otherwise; the server tells it.
    connection = http.client.HTTPConnection("127.0.0.1", loopback.port, timeout=10)
    connection.request("POST", f"/v1/measure?sizes=5000&statistic={'x' * 5000}", body=b"y" * 5000)
    response = connection.getresponse()
    text = response.read()
    assert response.status == 400 and response.will_close and len(text) < 300
    assert response.getheader("Server") is None and b"Python" not in text
    connection.close()
    assert loopback.request("GET", "/v1/device")[0] == 200


def test_tensors_beyond_the_memory_limit_are_refused_before_they_are_allocated(loopback: Server) -> None:
    from ai_edge_litert import schema_py_generated as schema

    huge = _one_op_model(schema, width=1 << 25)  # 128 MB a row: 8 GB of input at batch 64
    assert len(huge) < 512
    status, text = loopback.request("POST", f"/v1/measure?sizes={len(huge)}&batch_size=64&max_seconds=0.1", huge)
    assert status == 422 and "tensors need 32,768 MB at batch_size=64" in text, text
    (child,) = subprocess.run(["pgrep", "-P", str(loopback.process.pid)], capture_output=True, text=True).stdout.split()
    limits = Path(f"/proc/{child}/limits").read_text(encoding="utf-8")
    assert re.search(rf"Max address space\s+{int(default_memory_mb() * 2**20)}\s", limits), limits
    assert _rss_bytes(int(child)) < 2**30
    status, text = loopback.request("POST", f"/v1/measure?sizes={len(MODEL)}&batch_size={MAX_BATCH_SIZE + 1}", MODEL)
    assert status == 400 and f"batch_size <= {MAX_BATCH_SIZE}" in text
    assert loopback.request("POST", f"/v1/measure?sizes={len(MODEL)}&batch_size=64&max_seconds=0.1", MODEL)[0] == 200


def _one_op_model(schema, width: int) -> bytes:  # type: ignore[no-untyped-def]
    """A flatbuffer of one RELU from a [batch, width] float input: its size has nothing to do with
    the size of the tensors it declares."""
    import flatbuffers

    tensors = []
    for name in ("x", "y"):
        tensor = schema.TensorT()
        tensor.name, tensor.type, tensor.buffer = name, schema.TensorType.FLOAT32, 0
        tensor.shape, tensor.shapeSignature = [1, width], [-1, width]
        tensors.append(tensor)
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [0], [1]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = tensors, [operator], [0], [1]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU
    code.version = 1
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [subgraph], [schema.BufferT()], [code]
    builder = flatbuffers.Builder(64)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Redirects every request to ``target`` (if set) and records what it was sent."""

    target: ClassVar[str] = ""
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        self.send_response(302 if self.target else 200)
        if self.target:
            self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_client_follows_no_redirect_and_warns_of_plain_http(token: None, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = http.server.HTTPServer(("127.0.0.2", 0), type("Elsewhere", (_Recorder,), {"seen": []}))
    redirecting = http.server.HTTPServer(("127.0.0.1", 0), type("Redirect", (_Recorder,), {
        "seen": [], "target": f"http://127.0.0.2:{elsewhere.server_address[1]}"}))  # fmt: skip
    for server in (elsewhere, redirecting):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DeviceError, match="302, a redirect: not followed"):
            DeviceBackend(f"http://127.0.0.1:{redirecting.server_address[1]}", retries=0).fingerprint()
    finally:
        for server in (elsewhere, redirecting):
            server.shutdown()
            server.server_close()
    assert redirecting.RequestHandlerClass.seen and not elsewhere.RequestHandlerClass.seen  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, "tradeoff_search.cost._device_client"):
        DeviceBackend("https://board.example:8765")
        DeviceBackend("http://localhost:8765")
        assert not caplog.records
        DeviceBackend("http://board.example:8766")
    (record,) = caplog.records
    assert "plain http beyond this machine" in record.getMessage() and TOKEN not in record.getMessage()


@pytest.mark.parametrize(
    "weak",
    ["a" * 16, "ab" * 32, "9f86d081884c7d659a2f", "0123456789abcdef" * 4, "Tr0ub4dor&3", "12345678901234567890"],
    ids=["one letter", "a pair repeated", "80 bits of hex", "a pattern repeated", "a password", "digits"],
)
def test_a_weak_token_is_refused(tmp_path: Path, weak: str) -> None:
    with pytest.raises(ValueError, match="too weak a token") as caught:
        read_token(token_file(tmp_path, weak))
    assert weak not in str(caught.value)


def test_a_strong_token_is_read_from_a_file_only_its_owner_may_read(tmp_path: Path) -> None:
    for strong in (secrets.token_hex(16), secrets.token_urlsafe(16), TOKEN):
        assert read_token(token_file(tmp_path, strong)) == strong
    path = token_file(tmp_path)
    path.chmod(0o644)
    command = [sys.executable, "-m", "tradeoff_search", "device", "serve", "--port", "0", "--token-file", str(path)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "others may read or change it (mode 644): chmod 600 it" in refused.stderr and TOKEN not in refused.stderr


def test_the_spec_and_the_server_bound_a_measurement_alike(write_spec) -> None:  # type: ignore[no-untyped-def]
    def spec(max_seconds: float, batch_size: int) -> str:
        return f'[data]\nsource = "sklearn:iris"\n[latency]\nmax_seconds = {max_seconds}\nbatch_size = {batch_size}\n'

    loaded = StudySpec.load(write_spec(spec(MAX_SECONDS, MAX_BATCH_SIZE))).latency
    assert loaded.max_seconds == MAX_SECONDS and loaded.batch_sizes == (MAX_BATCH_SIZE,)
    for too_much in (spec(MAX_SECONDS + 1, 1), spec(1, MAX_BATCH_SIZE + 1)):
        with pytest.raises(SpecError):
            StudySpec.load(write_spec(too_much))
