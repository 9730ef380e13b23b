"""Retirement by memory: a worker process whose memory has grown too much leaves for a fresh one."""

from __future__ import annotations

import logging
import os
import signal
import sys

from tradeoff_search.process._channel import Ready, Retire, has_pool, tell_pool

_logger = logging.getLogger(__name__)


class Retirement:
    """A worker process's side of retirement by memory.

    After each trial it compares its resident memory with what it held after its first trial;
    once that has grown by more than ``growth_mb``, it tells its pool ("retire") and keeps
    working until the pool, which starts a replacement first, signals it (SIGUSR1) that the
    replacement is ready: it then leaves after the trial it is running. Without a pool to tell,
    it leaves at once. The growth is measured (``benchmarks/retirement.py``): one worker grew by
    +49 MB over 150 iris trials and +50 MB over the 30 trials of the default study (+57 MB per
    100 digits trials in ``benchmarks/memory.py``), while it holds ~0.85 GB: the default of
    1024 MB, ~20 times that, retires a worker that leaks, not a healthy one in a long study.
    """

    def __init__(self, growth_mb: float) -> None:
        self.growth_mb = growth_mb
        self.baseline: float | None = None
        self.leaving = False
        self.pooled = has_pool()
        if self.pooled and hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._leave)

    def ready(self) -> None:
        """Tell the pool this worker has loaded (TensorFlow, data, calibration) and takes trials."""
        tell_pool(Ready())

    def _leave(self, *_: object) -> None:
        self.leaving = True

    def after_trial(self) -> None:
        resident = resident_mb()
        if resident is None:
            return
        if self.baseline is None:
            self.baseline = resident
        elif resident - self.baseline > self.growth_mb and not self.leaving:
            _logger.info("worker %d: resident memory grew by %.0f MB, past %.0f MB: retiring",
                         os.getpid(), resident - self.baseline, self.growth_mb)  # fmt: skip
            if not self.pooled:
                self.leaving = True
            tell_pool(Retire())

    def due(self) -> bool:
        return self.leaving


def resident_mb() -> float | None:
    """This process's resident set size in MB (Linux /proc; elsewhere its peak; None on Windows)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        try:
            import resource
        except ImportError:
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
