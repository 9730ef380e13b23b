"""Running a study: its stores and sampler, the trial loop, the supervised pool of worker
processes, and the record completed at the end."""

from tradeoff_search.study._study import run_study
from tradeoff_search.study._workers import StoreFailed, WorkersFailed

__all__ = ["StoreFailed", "WorkersFailed", "run_study"]
