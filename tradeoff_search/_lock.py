"""A machine-wide lock so that latency is never measured while another worker trains.

Training holds it shared (workers train side by side), a measurement holds it exclusively: it
waits for running trainings to end, and trainings wait for it. Uncontended, it costs microseconds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_PATH = Path(tempfile.gettempdir()) / "tradeoff_search-latency.lock"


@contextlib.contextmanager
def machine_lock(shared: bool) -> Iterator[None]:
    """Hold the machine's latency lock: ``shared`` for training, exclusive for timing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, measurements may overlap training
        yield
        return
    descriptor = os.open(LOCK_PATH, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
