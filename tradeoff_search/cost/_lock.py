"""A lock per user of the machine so that latency is never measured while another worker trains.

Training holds it shared (workers train side by side), a measurement holds it exclusively: it
waits for running trainings to end, and trainings wait for it. Uncontended, it costs microseconds.

It lives in a folder only its user can write (``$XDG_RUNTIME_DIR/tradeoff_search`` or
``~/.cache/tradeoff_search``): at a fixed name in ``/tmp``, any local user could hold it and
stall every study on the machine. So the studies of one user never time while another of them
trains; another user's processes are not waited for. A wait longer than ``WAIT_SECONDS`` fails
the trial that waits, naming the lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tradeoff_search.rules import RunError

_logger = logging.getLogger(__name__)

WAIT_SECONDS = 1800.0  # longer than any training of a study meant for batch-1 latency
_TELL_AFTER_SECONDS = 30.0


def lock_path() -> Path:
    """This user's lock file, in a folder only they can write (made on first use).

    Raises:
        RunError: the folder cannot be made (e.g. ``HOME`` is not a folder of the user's); names
            the variable it came from, the folder, and ``XDG_RUNTIME_DIR``, which puts it elsewhere.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = (Path(runtime) if runtime else Path.home() / ".cache") / "tradeoff_search"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise RunError("XDG_RUNTIME_DIR" if runtime else "HOME", "latency lock folder", str(folder),
                       f"a folder this user can make and write ({type(error).__name__}: {error.strerror}); "
                       "set XDG_RUNTIME_DIR to a folder of yours") from None  # fmt: skip
    return folder / "latency.lock"


@contextlib.contextmanager
def machine_lock(shared: bool, timeout: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold this user's latency lock: ``shared`` for training, exclusive for timing.

    Raises:
        TimeoutError: it stayed taken for ``timeout`` seconds (the message names the lock file).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, measurements may overlap training
        yield
        return
    path = lock_path()
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(descriptor, mode)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited > timeout:
                    raise TimeoutError(f"the latency lock {path} stayed taken for {timeout:.0f} s: another process "
                                       "of yours is training or timing") from None  # fmt: skip
                if not told and waited > _TELL_AFTER_SECONDS:
                    _logger.info("waiting for the latency lock %s (another process of yours trains or times)", path)
                    told = True
                time.sleep(0.01)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
