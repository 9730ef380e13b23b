"""``device serve``: a latency server that times the ``.tflite`` files it is sent on this device.

Every worker of a study sends its candidates here, so all latencies are of one device and one
scale. Each request is timed with the project's harness (warm-up, interleaved short blocks, the
reference model interleaved for drift control), one at a time: concurrent requests queue.

Why the standard library's ``http.server``: the server must install on a board that has only
Python, ``numpy`` and ``ai-edge-litert``; it answers a handful of requests a minute, one timing at a
time, so a thread per connection (``ThreadingHTTPServer``) is plenty, and it needs no TLS of its
own (put it behind a tunnel or a reverse proxy for that). What it must get right is what it
accepts: a token compared in constant time, a body size limit, a socket timeout for slow clients,
and nothing interpreted but LiteRT flatbuffers, which LiteRT loads in a child process
(:mod:`tradeoff_search.device._timing_process`) so that one that crashes it cannot take the server down.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tradeoff_search.cost._device_client import is_loopback
from tradeoff_search.cost._harness import STATISTICS, Setting, cpu_model, litert_version

_logger = logging.getLogger(__name__)

MEASURE_PATH, DEVICE_PATH = "/v1/measure", "/v1/device"
MAX_MODELS = 64  # per request: a re-timed Pareto front is smaller
_TIMING_MARGIN_SECONDS = 60.0  # warm-up and interpreter set-up beyond max_seconds, per model


class RequestError(Exception):
    """A request the server refuses: an HTTP status and one line saying why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class TimingProcess:
    """The child process that times flatbuffers (:mod:`tradeoff_search.device._timing_process`); started
    again after a crash or a timeout. One request at a time: callers queue on its lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def measure(self, flatbuffers: Sequence[bytes], setting: dict[str, Any]) -> list[dict[str, Any]]:
        with self.lock:
            process = self._running()
            assert process.stdin is not None and process.stdout is not None
            header = json.dumps({"setting": setting, "sizes": [len(f) for f in flatbuffers]}).encode()
            try:
                process.stdin.write(len(header).to_bytes(8, "big") + header + b"".join(flatbuffers))
                process.stdin.flush()
            except BrokenPipeError:
                pass  # it died: the read below says how
            limit = (setting["max_seconds"] + _TIMING_MARGIN_SECONDS) * len(flatbuffers)
            ready, _, _ = select.select([process.stdout], [], [], limit)
            line = process.stdout.readline() if ready else b""
            if not line:
                self.stop()
                why = "did not finish within {limit:.0f} s" if not ready else f"crashed LiteRT ({_exit(process)})"
                raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"the model {why.format(limit=limit)}")
            answer = json.loads(line)
            if "error" in answer:
                raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"LiteRT cannot time this model: {answer['error']}")
            return list(answer["stats"])

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            command = [sys.executable, "-m", "tradeoff_search.device._timing_process"]
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self._process

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def _exit(process: subprocess.Popen[bytes]) -> str:
    code = process.wait()
    return f"signal {-code}" if code < 0 else f"exit code {code}"


class _Handler(BaseHTTPRequestHandler):
    server: _DeviceServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(self._device)

    def do_POST(self) -> None:
        self._answer(self._measure)

    def _answer(self, respond: Any) -> None:
        try:
            self._authorize()
            status, body = HTTPStatus.OK, respond()
        except RequestError as error:
            status, body = error.status, {"error": str(error)}
        except TimeoutError:
            status, body = HTTPStatus.REQUEST_TIMEOUT, {"error": f"the body did not arrive within {self.timeout:g} s"}
            self.close_connection = True
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _authorize(self) -> None:
        token = self.server.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            self.close_connection = True
            raise RequestError(HTTPStatus.UNAUTHORIZED, "this server needs a token: set TRADEOFF_SEARCH_DEVICE_TOKEN")
        if not hmac.compare_digest(given.removeprefix("Bearer ").encode(), token.encode()):
            self.close_connection = True
            raise RequestError(HTTPStatus.FORBIDDEN, "wrong token (TRADEOFF_SEARCH_DEVICE_TOKEN)")

    def _device(self) -> dict[str, Any]:
        if urlsplit(self.path).path != DEVICE_PATH:
            raise RequestError(HTTPStatus.NOT_FOUND, f"GET {DEVICE_PATH} or POST {MEASURE_PATH}")
        return fingerprint()

    def _measure(self) -> dict[str, Any]:
        url = urlsplit(self.path)
        if url.path != MEASURE_PATH:
            self.close_connection = True
            raise RequestError(HTTPStatus.NOT_FOUND, f"GET {DEVICE_PATH} or POST {MEASURE_PATH}")
        query = parse_qs(url.query, keep_blank_values=True)
        setting, sizes = _setting(query), _sizes(query)  # refused before the body is read
        body = self._body(sum(sizes))
        flatbuffers, start = [], 0
        for i, size in enumerate(sizes):
            part = body[start : start + size]
            start += size
            if size < 8 or part[4:8] != b"TFL3":
                raise RequestError(HTTPStatus.BAD_REQUEST, f"model {i}: not a LiteRT flatbuffer (no TFL3 identifier)")
            flatbuffers.append(part)
        return {"stats": self.server.timing.measure(flatbuffers, setting)}

    def _body(self, expected: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not a chunked body")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required") from None
        if length > self.server.max_bytes:
            self.close_connection = True  # its body stays unread
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{length} bytes: this server takes at most {self.server.max_bytes}")  # fmt: skip
        if length != expected:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {length}: the sizes add up to {expected}")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(body)} of {length} bytes")
        return body

    def log_message(self, format: str, *args: Any) -> None:
        _logger.info("%s %s", self.address_string(), format % args)  # the path and status; never headers


def _setting(query: dict[str, list[str]]) -> dict[str, Any]:
    """The timing setting from a query string, each value checked (as :class:`Setting` does)."""
    known = {"batch_size", "threads", "statistic", "max_seconds", "reference", "stop_above_reference", "sizes"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {unknown[0]!r}: expected {sorted(known)}")
    one = {key: values[-1] for key, values in query.items()}
    setting: dict[str, Any]
    try:
        setting = {
            "batch_size": int(one.get("batch_size", "1")),
            "threads": int(one.get("threads", "1")),
            "statistic": one.get("statistic", "p10"),
            "max_seconds": float(one.get("max_seconds", "1")),
            "reference": {"1": True, "0": False}[one.get("reference", "1")],
            "stop_above_reference": float(one["stop_above_reference"]) if "stop_above_reference" in one else None,
        }
        Setting(**setting)
    except (KeyError, ValueError) as error:
        what = "reference: expected 0 or 1" if isinstance(error, KeyError) else str(error)
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: {what}") from None
    if setting["statistic"] not in STATISTICS or setting["max_seconds"] > 600 or setting["batch_size"] > 1 << 16:
        raise RequestError(HTTPStatus.BAD_REQUEST, "bad query: max_seconds <= 600 and batch_size <= 65536")
    if setting["threads"] > (os.cpu_count() or 1):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: threads <= the {os.cpu_count()} cores of this device")
    return setting


def _sizes(query: dict[str, list[str]]) -> list[int]:
    text = query.get("sizes", [""])[-1]
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or len(sizes) > MAX_MODELS or min(sizes) < 0:
        expected = f"expected 1 to {MAX_MODELS} byte counts, e.g. sizes=2048,4096"
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: sizes={text!r}: {expected}")
    return sizes


class _DeviceServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str | None, max_bytes: int, client_timeout: float) -> None:
        handler = type("Handler", (_Handler,), {"timeout": client_timeout})
        super().__init__(address, handler)
        self.token, self.max_bytes, self.timing = token, max_bytes, TimingProcess()


def fingerprint() -> dict[str, Any]:
    """What this device is: what every measurement it answers records."""
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count() or 1, "runtime_version": litert_version()}


def read_token(path: Path) -> str:
    """The token in ``path`` (its first line); ``ValueError`` naming the flag when it has none."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--token-file {path}: cannot be read ({type(error).__name__})") from None
    if not token or "\n" in token or len(token) < 16:
        raise ValueError(f"--token-file {path}: expected one line of at least 16 characters")
    return token


def serve(host: str, port: int, token: str | None, max_mb: float = 64.0, client_timeout: float = 30.0) -> None:
    """Serve until interrupted; prints the URL it listens on (with the port it got for port 0)."""
    if token is None and not is_loopback(host):
        raise ValueError(f"--host {host}: serving beyond this machine needs --token-file")
    if not (math.isfinite(max_mb) and max_mb > 0):
        raise ValueError(f"--max-mb {max_mb}: expected a number > 0")
    server = _DeviceServer((host, port), token, int(max_mb * 2**20), client_timeout)
    device = fingerprint()
    print(f"serving LiteRT latency on http://{host}:{server.server_address[1]} ({device['cpu']}, "
          f"{device['logical_cores']} cores, {device['runtime_version']})", flush=True)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop as on Ctrl-C: close, end the timing process
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.timing.stop()
