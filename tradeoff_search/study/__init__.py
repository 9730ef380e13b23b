"""Running a study: its stores and sampler, the trial loop, the supervised pool of worker
processes, and the record completed at the end."""

from tradeoff_search.study._device_watch import check_device
from tradeoff_search.study._finish import sync_study
from tradeoff_search.study._open import open_study
from tradeoff_search.study._pool import StoreFailed, WorkersFailed, worker_logs
from tradeoff_search.study._study import run_study
from tradeoff_search.study._tickets import finished_count

__all__ = [
    "StoreFailed",
    "WorkersFailed",
    "check_device",
    "finished_count",
    "open_study",
    "run_study",
    "sync_study",
    "worker_logs",
]
