"""Workers sharing one study: trial tickets, a storage-wide lock, the trial loop, heartbeats.

Why tickets: Optuna's ``n_trials`` counts per ``optimize`` call and ``MaxTrialsCallback`` checks
after a trial, so workers started together overshoot. Here the study holds at most
``n_trials`` live slots (queued, running or finished trials); each run queues tickets (see
:class:`Tickets`) under a lock that every worker of the storage shares, and workers run only
trials they claim from the queue. A failed trial frees its slot for the next run; a crashed
worker's trial is found stale through its heartbeat, failed, and re-queued with the same
parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

Callback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def live_states() -> tuple[Any, ...]:
    import optuna

    state = optuna.trial.TrialState
    return (state.COMPLETE, state.PRUNED, state.RUNNING, state.WAITING)


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """A lock shared by every worker of ``url``: a file lock beside a SQLite database, an advisory
    lock in PostgreSQL; other storages get none (their workers should not top up at once)."""
    if url.startswith("sqlite:///"):
        import fcntl

        lock_path = Path(url.removeprefix("sqlite:///")).with_suffix(".lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)
    elif url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"tradeoff_search:{name}".encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            engine.dispose()
    else:
        yield


class Tickets:
    """This run's share of the study's trials, queued as tickets as they are needed.

    The share is what the study lacked when the run started (``n_trials`` minus its live trials),
    so a run ends even if every trial fails; a failed trial's slot goes to the next run. Tickets
    are queued a few at a time, not all at once: a study run "until the timeout" with a large
    ``n_trials`` would otherwise spend minutes writing them (~4.5 ms each). Every top-up happens
    under the storage lock and never takes the study past ``n_trials`` live trials, however many
    runs on however many machines share it.
    """

    def __init__(self, study: optuna.Study, n_trials: int, storage_url: str) -> None:
        self.study, self.n_trials, self.storage_url = study, n_trials, storage_url
        self.left = max(0, n_trials - self._live())

    def _live(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=live_states()))

    def __call__(self, limit: int = 1) -> int:
        """Queue up to ``limit`` tickets; returns how many were queued."""
        with storage_lock(self.storage_url, self.study.study_name):
            queued = max(0, min(limit, self.left, self.n_trials - self._live()))
            for _ in range(queued):
                self.study.enqueue_trial({})
        self.left -= queued
        return queued


def _claim(study: optuna.Study) -> optuna.Trial | None:
    """A queued trial, now RUNNING and ours; None when the queue is empty.

    ``Study.ask`` would create a new trial when the queue is empty, which is exactly what the
    tickets prevent; its queue-popping step (atomic in the storage) is reused as it is.
    """
    import optuna

    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Sequence[float]],
    callbacks: Sequence[Callback] = (),
    timeout: float | None = None,
    on_trial: Callable[[], None] | None = None,
    max_trials: int | None = None,
    tickets: Tickets | None = None,
) -> int:
    """Run queued trials until the queue is empty (and ``tickets``, asked then, queue no
    more), ``timeout`` seconds have passed or ``max_trials`` ran; returns how many ran.

    Each trial sends heartbeats (when the storage has them on) and is told to the study as
    COMPLETE, PRUNED or FAIL; a failure is logged and the loop goes on. On Ctrl-C the running
    trial is told FAIL and the interrupt goes up.
    """
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled

    deadline = None if timeout is None else time.monotonic() + timeout
    state = optuna.trial.TrialState
    ran = 0
    while (deadline is None or time.monotonic() < deadline) and (max_trials is None or ran < max_trials):
        if is_heartbeat_enabled(study._storage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # re-queues a crashed worker's trial
        trial = _claim(study)
        while trial is None and tickets is not None and tickets():  # another worker may win the ticket
            trial = _claim(study)
        if trial is None:
            return ran
        values: Sequence[float] | None = None
        with get_heartbeat_thread(trial._trial_id, study._storage):
            try:
                values = objective(trial)
                outcome = state.COMPLETE
            except optuna.TrialPruned as reason:
                outcome = state.PRUNED
                trial.set_user_attr("prune_reason", str(reason) or "pruned")
                _logger.info("trial %d pruned: %s", trial.number, reason)
            except Exception as error:
                outcome = state.FAIL
                _logger.warning("trial %d failed: %s: %s", trial.number, type(error).__name__, error)
            except KeyboardInterrupt:
                trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
                study.tell(trial, state=state.FAIL)
                raise
        with warnings.catch_warnings():  # values Optuna refuses (NaN) fail the trial with a warning
            warnings.simplefilter("ignore", UserWarning)
            frozen = study.tell(trial, values if outcome == state.COMPLETE else None, state=outcome)
        for callback in callbacks:
            callback(study, frozen)
        ran += 1
        if on_trial is not None:
            on_trial()
    return ran
