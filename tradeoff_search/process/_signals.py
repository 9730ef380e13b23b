"""SIGTERM stopped as Ctrl-C: ``kill`` or a scheduler ending a job gets the same orderly end."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def stopped_like_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler ending a job) stops the command as Ctrl-C does: worker
    processes stopped, the running trial failed, the record finished. Python's default would end
    this process at once and leave its workers running."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
