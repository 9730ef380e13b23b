"""Supervision: the pool kept busy while the run has trials, and what becomes of a worker that ends.

A worker that ends abnormally (a signal, a non-zero exit) has its trial failed and re-queued at
once and is replaced, until the study has its trials (unless it failed on a store or a file: the
run stops); a worker whose conversion overran its time limit has its trial failed for good and is
replaced.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.stores._optuna_adapter import fail_stale_trials
from tradeoff_search.study._loop import fail_trials_of, held, worker_id
from tradeoff_search.study._pool import Pool, StoreFailed, WorkersFailed
from tradeoff_search.study._progress import Progress
from tradeoff_search.study._tickets import Tickets, finished_count

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

# A worker that dies is replaced; after this many abnormal exits in a row with no trial finished in
# between, the run gives up. A trial whose model kills its worker (say, out of memory) is retried
# twice with its parameters (RetryHeartbeatStaleTrialCallback(max_retry=2)), so three deaths in
# a row can be one bad trial; a fourth means the next trial died too: the environment, not a trial.
MAX_DEATHS_IN_A_ROW = 4
EXIT_INTERRUPTED = 130  # a worker's exit code after Ctrl-C


def run_worker_processes(
    spec: StudySpec,
    storage: str,
    tracking_uri: str,
    workers: int,
    progress: Progress,
    tickets: Tickets,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Keep ``workers`` worker processes (see :func:`~tradeoff_search.study._pool.worker_command`)
    busy on this machine while this run has tickets left, with two queued per worker so that none
    finds the queue empty between trials, and until no trial of the study is left running
    elsewhere (or the timeout, or ``stop()``).

    Each has its share of the cores and its log in ``mlruns/logs/STUDY/``. A worker that ends
    abnormally (a signal such as the kernel's out-of-memory kill, or a non-zero exit) has its
    trial failed and re-queued with its parameters at once, and a fresh one takes over; after
    ``MAX_DEATHS_IN_A_ROW`` such exits with no trial finished in between, it raises
    :class:`WorkersFailed` naming the exit codes and the last worker's log. A worker that failed
    on a store or a file (it says so, see :class:`~tradeoff_search.process._channel.Failed`) is
    not replaced, since its replacement would fail alike: the other workers are interrupted and it
    raises :class:`StoreFailed` with the worker's one line. A worker whose memory has grown past
    ``[study] worker_growth_mb`` leaves once its replacement has loaded (see
    :class:`~tradeoff_search.study._retirement.Retirement`), so that the replacement's TensorFlow
    import overlaps its last trials. A worker whose work in hand overruns its time limit (a
    conversion, see :func:`~tradeoff_search.process._channel.time_limit`) is killed within a
    second of it; its trial is failed with the reason and not re-queued, and a fresh worker takes
    over.
    """
    pool = Pool(spec, storage, tracking_uri, workers, tickets, stop)
    deaths = _Deaths(tickets.study)
    try:
        while pool.queued() and pool.working() < workers:
            pool.start()
        while True:
            progress.refresh()
            pool.queued()
            ended = [(p, c) for p, c in pool.children.items() if c.poll() is not None]
            pool.listen()  # after seeing who ended: a worker's last word comes before its exit
            pool.end_overruns()
            for pid, child in ended:
                _ended(pool, pid, child.returncode, deaths)
            while pool.working() < workers and pool.queued():
                pool.start()
            if not pool.children:
                if pool.over() or not held(tickets.study):
                    return
                fail_stale_trials(tickets.study)  # another run's worker may have died: its trial comes back
            time.sleep(1)
    except StoreFailed:
        pool.interrupt()  # the others would fail on the same store
        raise
    finally:
        pool.close()


class _Deaths:
    """The abnormal exits of worker processes in a row, with no trial of the study finished in between."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.exits: list[str] = []
        self.finished = finished_count(study)

    def add(self, code: int) -> str:
        """Count the exit ``code`` (a new row if a trial finished since the last); describe it."""
        finished_now = finished_count(self.study)
        if finished_now > self.finished:
            self.exits, self.finished = [], finished_now
        self.exits.append(describe_exit(code))
        return self.exits[-1]


def _ended(pool: Pool, pid: int, code: int, deaths: _Deaths) -> None:
    """The worker ``pid`` ended with ``code``: after Ctrl-C, nothing to do; killed for overrunning a
    time limit, its trial failed without a retry; ended abnormally, its trial failed and re-queued,
    and after ``MAX_DEATHS_IN_A_ROW`` such deaths :class:`WorkersFailed`."""
    study = deaths.study
    overran = pool.forget(pid)
    if code in (EXIT_INTERRUPTED, -signal.SIGINT):  # Ctrl-C: this run's turn next
        return
    if overran is not None:  # its trial's fault, known: not a death that counts
        lost = fail_trials_of(study, worker_id(pid), f"{overran}: its worker process was ended", retry=False)
        _logger.warning("worker process %d: %s%s; ended, and a fresh one takes over", pid, overran,
                        f" (trial {lost[0]}, failed)" if lost else "")  # fmt: skip
        return
    if code == 0:
        return
    death = deaths.add(code)
    lost = fail_trials_of(study, worker_id(pid), f"worker process ended ({death})")
    trial = f", its trial {lost[0]} failed and is re-queued with its parameters" if lost else ""
    _logger.warning("worker process %d ended abnormally (%s)%s; see %s", pid, death, trial, pool.log_of[pid])
    if len(deaths.exits) >= MAX_DEATHS_IN_A_ROW:
        raise WorkersFailed(
            f"{len(deaths.exits)} worker processes in a row ended abnormally with no trial finished "
            f"in between ({', '.join(deaths.exits)}); read the last one's log: {pool.log_of[pid]}"
        )


def describe_exit(code: int) -> str:
    """``SIGKILL`` for a process a signal ended, else ``exit N``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"exit {code}"
