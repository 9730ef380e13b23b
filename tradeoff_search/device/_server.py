"""``device serve``: a latency server that times the ``.tflite`` files it is sent on this device.

Every worker of a study sends its candidates here, so all latencies are of one device and one
scale. Each request is timed with the project's harness (warm-up, interleaved short blocks, the
reference model interleaved for drift control), one at a time: concurrent requests queue.

Why the standard library: the server must install on a board that has only Python, ``numpy`` and
``ai-edge-litert``, and it needs no TLS of its own (put it behind a tunnel or a reverse proxy
for that). What it must get right is what it accepts, the way long-lived network services do:

- connections are capped and read by one thread over a selector, each request within one
  deadline, its head checked (no ``Origin``: no web page; a loopback ``Host`` for a server without
  a token: no DNS rebinding; the token, in constant time) before its body is read
  (:mod:`~tradeoff_search.device._connections`);
- requests wait for the one timing slot in a bounded queue, their bodies unread until their turn,
  each with a cap on its timing seconds and batch size (:mod:`~tradeoff_search.device._timing`);
- nothing is interpreted but LiteRT flatbuffers, which LiteRT loads in a child process with a
  memory limit, checked for the size of their tensors before it allocates them.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tradeoff_search.cost._device_client import is_loopback
from tradeoff_search.cost._harness import STATISTICS, Setting, cpu_model, litert_version
from tradeoff_search.device._connections import RESERVED_FDS, Connection, ConnectionLoop
from tradeoff_search.device._http import Head, RequestError, answer, trim
from tradeoff_search.device._timing import Job, TimingProcess, TimingQueue
from tradeoff_search.device._timing_process import BASE_BYTES
from tradeoff_search.device._token import read_token
from tradeoff_search.spec._sections import micro_installed

__all__ = ["fingerprint", "is_loopback", "read_token", "serve"]

_logger = logging.getLogger(__name__)

MEASURE_PATH, DEVICE_PATH, RAM_PATH = "/v1/measure", "/v1/device", "/v1/ram"
MAX_MODELS = 64  # per request: a re-timed Pareto front is smaller
MAX_SECONDS = 600.0  # of timing per request (all its models side by side); the spec's bound too
MAX_BATCH_SIZE = 4096  # the spec's bound on latency batch sizes
_KNOWN = ("batch_size", "threads", "statistic", "max_seconds", "reference", "stop_above_reference", "sizes")


@dataclass(frozen=True)
class _Handler:
    """What answers a complete head: refusals, the fingerprint, or a measure request queued."""

    token: str | None
    max_bytes: int
    timing: TimingQueue
    device: dict[str, Any]

    def __call__(self, head: Head, connection: Connection) -> tuple[HTTPStatus, bytes] | None:
        self._check(head)
        try:
            url = urlsplit(head.target)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"request target {trim(head.target)!r}: not a path") from None
        if head.method == "GET" and url.path == DEVICE_PATH:
            return HTTPStatus.OK, answer(HTTPStatus.OK, self.device)
        if head.method != "POST" or url.path not in (MEASURE_PATH, RAM_PATH):
            raise RequestError(HTTPStatus.NOT_FOUND, f"GET {DEVICE_PATH}, POST {MEASURE_PATH} or POST {RAM_PATH}")
        query = parse_qs(url.query, keep_blank_values=True)
        ram = url.path == RAM_PATH
        setting, sizes = _ram_query(query) if ram else _setting(query), _sizes(query)
        self._check_length(head, sum(sizes))
        expects_continue = head.headers.get("expect", "").lower() == "100-continue"
        seconds = connection.deadline - time.monotonic()
        self.timing.submit(Job(connection, setting, sizes, seconds, expects_continue, ram))
        return None

    def _check(self, head: Head) -> None:
        if "origin" in head.headers:  # what browsers add to a page's requests; our clients never send it
            raise RequestError(HTTPStatus.FORBIDDEN, "a request from a web page (it has an Origin header) is refused")
        if self.token is None:
            # Without a token, only this machine's own names: a page whose name was made to
            # resolve to 127.0.0.1 (DNS rebinding) sends its own name as Host.
            host = head.headers.get("host", "")
            if not is_loopback(_hostname(host)):
                loopback = "this server answers 127.0.0.1, [::1] or localhost only"
                raise RequestError(HTTPStatus.MISDIRECTED_REQUEST, f"Host {trim(host)!r}: {loopback}")
            return
        given = head.headers.get("authorization", "")
        if not given.startswith("Bearer "):
            raise RequestError(HTTPStatus.UNAUTHORIZED, "this server needs a token: set TRADEOFF_SEARCH_DEVICE_TOKEN")
        if not hmac.compare_digest(given.removeprefix("Bearer ").encode(), self.token.encode()):
            raise RequestError(HTTPStatus.FORBIDDEN, "wrong token (TRADEOFF_SEARCH_DEVICE_TOKEN)")

    def _check_length(self, head: Head, expected: int) -> None:
        if "transfer-encoding" in head.headers:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not a chunked body")
        text = head.headers.get("content-length", "")
        if not (text.isascii() and text.isdigit()):
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        length = int(text)
        if length > self.max_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{length} bytes: this server takes at most {self.max_bytes}")  # fmt: skip
        if length != expected:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {length}: the sizes add up to {expected}")


def _hostname(host: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8765`` → ``::1``)."""
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


def _setting(query: dict[str, list[str]]) -> dict[str, Any]:
    """The timing setting from a query string, each value checked (as :class:`Setting` does)."""
    unknown = sorted(set(query) - set(_KNOWN))
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           f"unknown query parameter {trim(unknown[0])!r}: expected {sorted(_KNOWN)}")  # fmt: skip
    one = {key: values[-1] for key, values in query.items()}
    if one.get("statistic", "p10") not in STATISTICS:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: statistic={trim(one['statistic'])!r}: "
                           f"expected one of {STATISTICS}")  # fmt: skip
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
        what = "reference: expected 0 or 1" if isinstance(error, KeyError) else trim(str(error), 120)
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: {what}") from None
    if setting["max_seconds"] > MAX_SECONDS or setting["batch_size"] > MAX_BATCH_SIZE:
        limits = f"max_seconds <= {MAX_SECONDS:g} and batch_size <= {MAX_BATCH_SIZE}"
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: {limits}")
    if setting["threads"] > (os.cpu_count() or 1):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: threads <= the {os.cpu_count()} cores of this device")
    return setting


def _ram_query(query: dict[str, list[str]]) -> dict[str, Any]:
    """A RAM request takes ``sizes`` only, and this device must have the micro runtime."""
    unknown = sorted(set(query) - {"sizes"})
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {trim(unknown[0])!r}: expected ['sizes']")
    if not micro_installed():
        needs = "this device has no micro runtime to measure RAM: pip install 'tradeoff_search[micro]'"
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, needs)
    return {}


def _sizes(query: dict[str, list[str]]) -> list[int]:
    text = query.get("sizes", [""])[-1]
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or len(sizes) > MAX_MODELS or min(sizes) < 0:
        expected = f"expected 1 to {MAX_MODELS} byte counts, e.g. sizes=2048,4096"
        raise RequestError(HTTPStatus.BAD_REQUEST, f"bad query: sizes={trim(text)!r}: {expected}")
    return sizes


def fingerprint() -> dict[str, Any]:
    """What this device is: what every measurement it answers records."""
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count() or 1, "runtime_version": litert_version()}


def default_memory_mb() -> float:
    """The timing process's default memory limit: half this device's memory, 4 GB at most."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return 4096.0
    return min(4096.0, memory / 2**21)


def connection_cap(max_connections: int) -> int:
    """``max_connections``, or fewer if the process may not open that many files (its soft limit
    is raised to its hard limit first, as far as needed)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to respect
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return max_connections if soft == resource.RLIM_INFINITY else min(max_connections, soft - RESERVED_FDS)


def serve(
    host: str,
    port: int,
    token: str | None,
    max_mb: float = 64.0,
    client_timeout: float = 30.0,
    max_connections: int = 256,
    max_queue: int = 32,
    max_memory_mb: float | None = None,
) -> None:
    """Serve until interrupted; prints the URL it listens on (with the port it got for port 0)."""
    if token is None and not is_loopback(host):
        raise ValueError(f"--host {host}: serving beyond this machine needs --token-file")
    memory_mb = default_memory_mb() if max_memory_mb is None else max_memory_mb
    for flag, value, low in (("--max-mb", max_mb, 0), ("--client-timeout", client_timeout, 0),
                             ("--max-memory-mb", memory_mb, 2 * BASE_BYTES / 2**20)):  # fmt: skip
        if not (math.isfinite(value) and value > low):
            raise ValueError(f"{flag} {value}: expected a number > {low:g}")
    cap = connection_cap(max_connections)
    if max_queue < 1 or cap < max_queue + 2:
        raise ValueError(f"--max-queue {max_queue}, --max-connections {max_connections} (at most {cap} "
                         "with this process's file limit): expected 1 <= max_queue <= max_connections - 2")  # fmt: skip
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=128)
    loop = ConnectionLoop(listener, cap, client_timeout)
    timing = TimingProcess(int(memory_mb * 2**20))
    device = fingerprint()
    handler = _Handler(token, int(max_mb * 2**20), TimingQueue(timing, max_queue, client_timeout, loop.finish), device)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"serving LiteRT latency on http://{shown}:{listener.getsockname()[1]} ({device['cpu']}, "
          f"{device['logical_cores']} cores, {device['runtime_version']})", flush=True)  # fmt: skip
    if cap < max_connections:
        _logger.warning("at most %d connections at once: this process may open %d files", cap, cap + RESERVED_FDS)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop as on Ctrl-C: close, end the timing process
    try:
        loop.run(handler)
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
        timing.stop()
