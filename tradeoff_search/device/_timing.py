"""The latency server's one timing slot, the requests waiting for it, and the process that times
(or, for ``POST /v1/ram``, the helper process that measures RAM on the micro runtime).

Requests are timed one at a time, in the order they came. At most ``max_queue`` wait; one more
is answered 503 at once. A waiting request holds its connection only: its body is read when its
turn comes, within what is left of the request's deadline, so memory holds one body at a time
whatever the number waiting. LiteRT runs in a child process
(:mod:`tradeoff_search.device._timing_process`) whose address space is limited, so a flatbuffer
that crashes it, asks for more memory than the device has or does not finish ends that process
only: the request is answered 422 and the next one starts another.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from tradeoff_search.cost._memory import MemoryMeterError, encode, measure_ram
from tradeoff_search.device._connections import Connection
from tradeoff_search.device._http import FAILED, RequestError, answer, refusal

_logger = logging.getLogger(__name__)

# Loading the interpreters, warming them up and the last round of blocks, beyond max_seconds:
# the models of a request are timed side by side, within one max_seconds for all.
_TIMING_MARGIN_SECONDS = 60.0
_READ_BYTES = 1 << 20


class TimingProcess:
    """The child process that times flatbuffers; started again after a crash or a timeout.
    One request at a time (the timing thread's)."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self._process: subprocess.Popen[bytes] | None = None

    def measure(self, flatbuffers: Sequence[memoryview], setting: dict[str, Any]) -> list[dict[str, Any]]:
        process = self._running()
        assert process.stdin is not None and process.stdout is not None
        header = json.dumps({"setting": setting, "sizes": [len(f) for f in flatbuffers]}).encode()
        try:
            process.stdin.write(len(header).to_bytes(8, "big") + header)
            for flatbuffer in flatbuffers:
                process.stdin.write(flatbuffer)
            process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: the read below says how
        limit = setting["max_seconds"] + _TIMING_MARGIN_SECONDS
        ready, _, _ = select.select([process.stdout], [], [], limit)
        line = process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            why = f"did not finish within {limit:.0f} s" if not ready else f"crashed LiteRT ({_exit(process)})"
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"the model {why}")
        result = json.loads(line)
        if "error" in result:
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f"LiteRT cannot time this model: {result['error']}")
        return list(result["stats"])

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            command = [sys.executable, "-m", "tradeoff_search.device._timing_process", str(self.memory_bytes)]
            # numpy's BLAS is not used there; on a many-core board its threads would take address space
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        return self._process

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def _rams(flatbuffers: Sequence[memoryview]) -> list[dict[str, Any]]:
    """Each flatbuffer's RAM on the micro runtime, measured as a study measures it (the helper
    process of ``cost._memory``, which imports neither TensorFlow nor LiteRT): what a refused model
    lacks is an answer, a failed measurement an error."""
    try:
        return [encode(measure_ram(bytes(flatbuffer))) for flatbuffer in flatbuffers]
    except MemoryMeterError as error:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from None


def _exit(process: subprocess.Popen[bytes]) -> str:
    code = process.wait()
    return f"signal {-code}" if code < 0 else f"exit code {code}"


@dataclass(frozen=True)
class Job:
    """A measure request waiting for the timing slot: its head is checked, its body unread."""

    connection: Connection
    setting: dict[str, Any]
    sizes: list[int]
    seconds: float  # left of the request's deadline, for its body
    expects_continue: bool = False  # the client waits for a "100 Continue" before it sends its body
    ram: bool = False  # measure RAM on the micro runtime (POST /v1/ram), not latency


class TimingQueue:
    """The timing thread and the requests waiting for it; it answers each through ``finish``."""

    def __init__(
        self,
        timing: TimingProcess,
        max_queue: int,
        client_timeout: float,
        finish: Callable[[Connection, HTTPStatus, bytes], None],
    ) -> None:
        self._timing, self._client_timeout, self._finish = timing, client_timeout, finish
        self._jobs: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        threading.Thread(target=self._run, name="timing", daemon=True).start()

    def submit(self, job: Job) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            waiting = f"busy: {self._jobs.maxsize} requests are waiting to be timed; try again later"
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, waiting) from None

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job.ram:
                    status, payload = HTTPStatus.OK, answer(HTTPStatus.OK, {"ram": _rams(self._flatbuffers(job))})
                else:
                    stats = self._timing.measure(self._flatbuffers(job), job.setting)
                    status, payload = HTTPStatus.OK, answer(HTTPStatus.OK, {"stats": stats})
            except RequestError as error:
                status, payload = error.status, refusal(error)
            except Exception:  # a bug: in the log, answered, and the next request served all the same
                _logger.exception("timing a request failed")
                status, payload = HTTPStatus.INTERNAL_SERVER_ERROR, FAILED
            self._finish(job.connection, status, payload)

    def _flatbuffers(self, job: Job) -> list[memoryview]:
        body = memoryview(self._body(job))
        flatbuffers, start = [], 0
        for i, size in enumerate(job.sizes):
            part = body[start : start + size]
            start += size
            if size < 8 or bytes(part[4:8]) != b"TFL3":
                raise RequestError(HTTPStatus.BAD_REQUEST, f"model {i}: not a LiteRT flatbuffer (no TFL3 identifier)")
            flatbuffers.append(part)
        return flatbuffers

    def _body(self, job: Job) -> bytearray:
        """The request's body: what came with its head, then the rest within what is left of its
        deadline (a client that asked for it is told to send it now: its turn has come)."""
        connection, length = job.connection, sum(job.sizes)
        body = bytearray(length)
        view = memoryview(body)
        got = min(len(connection.received), length)
        view[:got] = connection.received[:got]
        deadline = time.monotonic() + job.seconds
        if job.expects_continue and got < length:
            try:
                connection.sock.settimeout(max(job.seconds, 0.001))
                connection.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "the connection broke before the body came") from None
        while got < length:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestError(HTTPStatus.REQUEST_TIMEOUT,
                                   f"the request did not arrive within {self._client_timeout:g} s")  # fmt: skip
            connection.sock.settimeout(left)
            try:
                count = connection.sock.recv_into(view[got:], min(length - got, _READ_BYTES))
            except TimeoutError:
                continue  # the deadline, above
            except OSError:
                count = 0
            if not count:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {got} of {length} bytes")
            got += count
        return body
