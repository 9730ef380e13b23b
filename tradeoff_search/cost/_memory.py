"""RAM a candidate needs on a microcontroller, as the micro runtime allocates it: the minimum
tensor arena with which TensorFlow Lite for Microcontrollers (the ``tflite-micro`` wheel, the
``[micro]`` extra) allocates and invokes the ``.tflite`` as shipped. Flash is the file's bytes.

:func:`measure_ram` sends the flatbuffer to this process's helper,
``python -m tradeoff_search.cost._memory_process`` (see ``_arena`` for how it searches): the
search forks a child per probe, because a too-small arena may crash the runtime, and forking a
process that imported TensorFlow is slow and, with its threads, unsafe. The helper imports
neither TensorFlow nor LiteRT and runs single-threaded; it starts on first use and again if it
died, and ends with this process (its standard input closes).
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

from tradeoff_search.cost._harness import LOCAL
from tradeoff_search.spec._sections import micro_installed

_logger = logging.getLogger(__name__)

ARENA_CEILING = 64 << 20  # the largest arena tried: a model needing more is refused ("arena")
# What a model the micro runtime cannot run counts as RAM, as an objective and against a budget:
# more than any arena measured, so that every model it can run beats it.
REFUSED_RAM_BYTES = 2 * ARENA_CEILING

# An answer takes 21-340 ms; a probe's child is killed after 10 s and a search makes at most ~40.
_ANSWER_SECONDS = 600.0
# numpy's BLAS would start a thread at import: the helper forks, so it stays single-threaded.
_SINGLE_THREADED = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass(frozen=True)
class RamMeasurement:
    """What a model needs on the micro runtime: ``arena_bytes`` is the minimum tensor arena
    (allocate and invoke succeed with it, fail with one byte less); ``flash_bytes`` the
    ``.tflite``'s size; ``reported_bytes`` what the runtime itself reports in use after allocating
    at a large arena (a lower estimate: its planner's temporary buffers are freed by then)."""

    arena_bytes: int
    flash_bytes: int
    reported_bytes: int
    probes: int  # allocations tried
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NotDeployable:
    """The micro runtime cannot run the model at any arena (up to :data:`ARENA_CEILING`), and why.

    ``stage``: ``load`` (no kernel for ``op``), ``prepare`` or ``invoke`` (``op``'s kernel refuses
    its types or shapes, e.g. a dynamic-range model's int8 weights with float activations),
    ``arena`` (needs more than the ceiling), ``crash`` (the runtime died or hung at the ceiling)."""

    op: str | None  # the operator named by the runtime (e.g. "GELU"); None when it names none
    stage: str
    reason: str  # the runtime's own lines, joined

    def __str__(self) -> str:
        what = f"op {self.op}" if self.op else self.stage
        return f"not deployable on the micro runtime: {what} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryMeterError(RuntimeError):
    """The helper process died twice on one flatbuffer, or did not answer in time."""


def decode(answer: dict[str, Any]) -> RamMeasurement | NotDeployable:
    """A helper's answer (``{"ram": …}`` or ``{"refusal": …}``) as what it measured.

    Raises:
        MemoryMeterError: the answer is an error.
    """
    if "ram" in answer:
        return RamMeasurement(**answer["ram"])
    if "refusal" in answer:
        return NotDeployable(**answer["refusal"])
    raise MemoryMeterError(f"RAM measurement failed: {answer.get('error', answer)}")


def encode(result: RamMeasurement | NotDeployable) -> dict[str, Any]:
    """What :func:`decode` reads back."""
    return {"ram" if isinstance(result, RamMeasurement) else "refusal": result.to_dict()}


class MemoryMeter:
    """A persistent helper process measuring RAM, started on first use and again if it died."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # one request at a time on the pipe

    def start(self) -> None:
        """Start the helper now, without waiting for it (its imports overlap a conversion)."""
        with self._lock:
            self._started()

    def measure(self, flatbuffer: bytes) -> RamMeasurement | NotDeployable:
        """The RAM ``flatbuffer`` needs on the micro runtime (see :class:`RamMeasurement`).

        Raises:
            MemoryMeterError: the helper died on it twice, or did not answer in time.
        """
        with self._lock:
            for attempt in (1, 2):
                process = self._started()
                try:
                    return decode(self._ask(process, flatbuffer))
                except (BrokenPipeError, EOFError) as error:
                    self.close_unlocked()
                    _logger.warning("RAM helper process ended (%s), attempt %d of 2", error, attempt)
            raise MemoryMeterError("the RAM helper process ended twice measuring one model")

    def close(self) -> None:
        with self._lock:
            self.close_unlocked()

    def close_unlocked(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            if not micro_installed():
                raise MemoryMeterError("RAM needs the micro runtime: pip install 'tradeoff_search[micro]'")
            command = [sys.executable, "-m", "tradeoff_search.cost._memory_process"]
            env = {**os.environ, **_SINGLE_THREADED}
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        return self._process

    def _ask(self, process: subprocess.Popen[bytes], flatbuffer: bytes) -> dict[str, Any]:
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None and stdout is not None, "started with pipes"
        stdin.write(len(flatbuffer).to_bytes(8, "big") + flatbuffer)
        stdin.flush()
        line = _read_line(stdout, _ANSWER_SECONDS)
        if line is None:
            self.close_unlocked()
            raise MemoryMeterError(f"the RAM helper process did not answer within {_ANSWER_SECONDS:.0f} s")
        if not line:
            raise EOFError(f"exit code {process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer


def _read_line(stream: IO[bytes], seconds: float) -> bytes | None:
    """One line from ``stream``, or None when none came within ``seconds``."""
    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline() if ready else None


_meter = MemoryMeter()


def measure_ram(flatbuffer: bytes) -> RamMeasurement | NotDeployable:
    """The RAM ``flatbuffer`` needs on the micro runtime, measured by this process's helper (see
    :class:`MemoryMeter`; the micro runtime must be installed, see :func:`micro_installed`).

    Raises:
        MemoryMeterError: the helper failed (not the model: a model the runtime cannot run is
            :class:`NotDeployable`).
    """
    return _meter.measure(bytes(flatbuffer))


def measure_rams(flatbuffers: Sequence[bytes], device: str = LOCAL) -> list[RamMeasurement | NotDeployable]:
    """The RAM each of ``flatbuffers`` needs on the micro runtime: measured here, or by the latency
    server ``device`` (``http://HOST:PORT``) on its side, so that one place answers latency, RAM
    and flash.

    Raises:
        MemoryMeterError: the measurement failed here, or on the server.
        DeviceError: the latency server refused the request or did not answer.
    """
    if device == LOCAL:
        return [measure_ram(flatbuffer) for flatbuffer in flatbuffers]
    from tradeoff_search.cost._device_client import DeviceBackend

    return DeviceBackend(device).measure_ram(flatbuffers)


def start_ram_meter() -> None:
    """Start this process's helper ahead of its first :func:`measure_ram`, without waiting."""
    _meter.start()
