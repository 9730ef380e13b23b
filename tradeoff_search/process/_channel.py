"""A worker process's line to its pool: one short message per line on an inherited pipe.

The pool (:func:`tradeoff_search.study._supervision.run_worker_processes`) starts each worker process with
the pipe's descriptor in ``TRADEOFF_SEARCH_STATUS_FD`` (see :class:`Inbox`, the pool's end). A
process without it (a study run in process, your own script around
:class:`~tradeoff_search.TradeoffObjective`) has no pool: these calls then do nothing.

The messages, each a class below, written and read here only: :class:`Ready`, :class:`Retire`,
:class:`Failed`, and :class:`Limit` … :class:`Done` around work the pool ends the process for
if it overruns (see :func:`time_limit`). On the pipe, a line ``PID VERB [ARGUMENTS]``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

STATUS_FD = "TRADEOFF_SEARCH_STATUS_FD"
_PIPE_BUF = 512  # POSIX: a write to a pipe up to this size is atomic


@dataclass(frozen=True)
class Ready:
    """The worker has loaded (TensorFlow, data, calibration) and takes trials."""


@dataclass(frozen=True)
class Retire:
    """The worker's memory grew too much: it asks to be replaced, then to leave."""


@dataclass(frozen=True)
class Failed:
    """A store or file failure that the worker's replacement would meet too (its one line)."""

    reason: str


@dataclass(frozen=True)
class Limit:
    """Work begins that the pool ends the process for if it is not :class:`Done` within ``seconds``."""

    seconds: float
    what: str


@dataclass(frozen=True)
class Done:
    """The work of the last :class:`Limit` is done."""


Message = Ready | Retire | Failed | Limit | Done
_WITHOUT_ARGUMENTS: dict[str, Message] = {"ready": Ready(), "retire": Retire(), "done": Done()}


def encode(message: Message) -> str:
    """``message`` as its line on the pipe, without the process id (see :func:`decode`)."""
    match message:
        case Failed(reason):
            return f"failed {reason}"
        case Limit(seconds, what):
            return f"limit {seconds:g} {what}"
        case Ready():
            return "ready"
        case Retire():
            return "retire"
        case Done():
            return "done"


def decode(text: str) -> Message | None:
    """The message a line of :func:`encode` holds; None for a line that holds none."""
    verb, _, rest = text.partition(" ")
    if verb == "failed":
        return Failed(rest)
    if verb == "limit":
        seconds, _, what = rest.partition(" ")
        try:
            return Limit(float(seconds), what)
        except ValueError:
            return None
    return _WITHOUT_ARGUMENTS.get(text)


def tell_pool(message: Message) -> None:
    """Say ``message`` to this worker process's pool, if it has one: one line on its status pipe,
    prefixed with this process's id."""
    fd = os.environ.get(STATUS_FD)
    if fd:
        with contextlib.suppress(OSError, ValueError):  # the pool is gone: nobody to tell
            line = f"{os.getpid()} {' '.join(encode(message).split())}"
            os.write(int(fd), line.encode()[: _PIPE_BUF - 1] + b"\n")  # written at once, never interleaved


def has_pool() -> bool:
    """Whether this process was started by a pool (it has a status pipe to tell)."""
    return STATUS_FD in os.environ


class Inbox:
    """The pool's end of the status pipe its worker processes inherit (:attr:`child_env`,
    :attr:`write` in ``pass_fds``): what they said, read without waiting."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        os.set_blocking(self.read, False)
        self.child_env = {STATUS_FD: str(self.write)}
        self.pending = b""

    def received(self) -> list[tuple[int, Message]]:
        """What the workers said since the last call: (pid, message), lines that hold none left out."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read, 4096):
                self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        said = []
        for line in lines:
            pid, _, text = line.decode(errors="replace").partition(" ")
            message = decode(text)
            if message is not None and pid.isdigit():
                said.append((int(pid), message))
        return said

    def close(self) -> None:
        os.close(self.read)
        os.close(self.write)


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Work that this worker process's pool ends it for if it takes more than ``seconds``.

    For work that nothing in the process can interrupt: TensorFlow's converter runs in native
    code and holds the GIL for up to a second at a time (measured on an 8.5M-parameter MLP), so
    neither a signal handler nor a watchdog thread gets to run; a converter that never returns
    would hold its worker forever. The pool kills the process, fails its trial with "``what``
    did not finish within ``seconds`` s" and no retry (its parameters would take as long again),
    and starts a fresh worker, as a task queue's hard time limit does. Without a pool, or with
    ``seconds`` None, there is no limit.
    """
    if seconds is None or not has_pool():
        yield
        return
    tell_pool(Limit(seconds, what))
    try:
        yield
    finally:
        tell_pool(Done())
