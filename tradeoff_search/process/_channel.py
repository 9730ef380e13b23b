"""A worker process's line to its pool: one short message per line on an inherited pipe.

The pool (:func:`tradeoff_search.study._workers.run_worker_processes`) starts each worker process with
the pipe's descriptor in ``TRADEOFF_SEARCH_STATUS_FD``. A process without it (a study run in
process, your own script around :class:`~tradeoff_search.TradeoffObjective`) has no pool: these
calls then do nothing.

The messages: ``ready`` (loaded, takes trials), ``retire`` (memory grew too much), ``failed
REASON`` (a store or file failure its replacement would meet too), and ``limit SECONDS WHAT`` …
``done`` around work the pool ends the process for if it overruns (see :func:`time_limit`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

STATUS_FD = "TRADEOFF_SEARCH_STATUS_FD"
_PIPE_BUF = 512  # POSIX: a write to a pipe up to this size is atomic


def tell_pool(message: str) -> None:
    """Say ``message`` to this worker process's pool, if it has one: one line on its status pipe,
    prefixed with this process's id."""
    fd = os.environ.get(STATUS_FD)
    if fd:
        with contextlib.suppress(OSError, ValueError):  # the pool is gone: nobody to tell
            line = f"{os.getpid()} {' '.join(message.split())}"
            os.write(int(fd), line.encode()[: _PIPE_BUF - 1] + b"\n")  # written at once, never interleaved


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
    if seconds is None or STATUS_FD not in os.environ:
        yield
        return
    tell_pool(f"limit {seconds:g} {what}")
    try:
        yield
    finally:
        tell_pool("done")
