"""The trial loop: a worker claims queued trials and runs them, one at a time, with heartbeats.

A crashed worker's trial is found stale through its heartbeat, failed, and re-queued with the
same parameters; a worker process its pool saw end has its trials failed (and re-queued) at once
(:func:`fail_trials_of`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tradeoff_search.process import process_identity
from tradeoff_search.record._keys import FAIL_REASON, FINISHED_ATTR, PRUNE_REASON, WORKER_ATTR, WORKER_PROCESS_ATTR
from tradeoff_search.stores import storage_lock
from tradeoff_search.stores._optuna_adapter import (
    claim_waiting_trial,
    fail_and_requeue,
    fail_stale_trials,
    heartbeat,
    set_trial_system_attr,
)
from tradeoff_search.study._tickets import Tickets

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

Callback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def _claim(study: optuna.Study, storage_url: str | None) -> optuna.Trial | None:
    """A queued trial, now RUNNING and ours; None when the queue is empty.

    ``Study.ask`` would create a new trial when the queue is empty, which is exactly what the
    tickets prevent; its queue-popping step is reused (:func:`claim_waiting_trial`). That step
    reads WAITING, then writes RUNNING, relying on ``SELECT … FOR UPDATE``, which SQLite ignores:
    two workers once both claimed trial 0 (one's result lost, it exited on telling it). On SQLite
    it runs under the storage's lock (``storage_url``; a file lock, microseconds).
    """
    sqlite = storage_url if storage_url is not None and storage_url.startswith("sqlite") else None
    with storage_lock(sqlite, study.study_name) if sqlite else contextlib.nullcontext():
        return claim_waiting_trial(study)


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Sequence[float]],
    callbacks: Sequence[Callback] = (),
    timeout: float | None = None,
    on_trial: Callable[[], None] | None = None,
    tickets: Tickets | None = None,
    stop: Callable[[], bool] | None = None,
    storage_url: str | None = None,
) -> int:
    """Run queued trials until the queue is empty (and ``tickets``, asked then, queue no
    more), ``timeout`` seconds have passed or ``stop()`` says so before a trial; returns how many ran.
    ``storage_url``, the study's storage: on SQLite, trials are claimed under its lock.

    Each trial is marked with this process (see :func:`worker_id`), sends heartbeats (when the
    storage has them on) and is told to the study as COMPLETE, PRUNED or FAIL; a failure is
    logged and the loop goes on. On Ctrl-C the running trial is told FAIL and the interrupt goes
    up. With ``tickets`` (a run's own loop) it also waits for trials other workers still run, so
    that a crashed one's trial, re-queued when its heartbeat goes stale, is run here.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    me = worker_id()
    ran = 0
    while (deadline is None or time.monotonic() < deadline) and (stop is None or not stop()):
        fail_stale_trials(study)  # re-queues a crashed worker's trial
        trial = _claim(study, storage_url)
        while trial is None and tickets is not None and tickets():  # another worker may win the ticket
            trial = _claim(study, storage_url)
        if trial is None:
            if tickets is None or not held(study):
                return ran
            time.sleep(1)
            continue
        frozen = _run_trial(study, trial, objective, me)
        for callback in callbacks:
            callback(study, frozen)
        ran += 1
        if on_trial is not None:
            on_trial()
    return ran


def _run_trial(
    study: optuna.Study, trial: optuna.Trial, objective: Callable[[optuna.Trial], Sequence[float]], me: str
) -> optuna.trial.FrozenTrial:
    """Run ``objective`` on ``trial``, with heartbeats and marked as worker ``me``'s, and tell the
    study how it ended (see :func:`work`)."""
    import optuna

    state = optuna.trial.TrialState
    values: Sequence[float] | None = None
    with heartbeat(trial):
        set_trial_system_attr(trial, WORKER_ATTR, me)  # once heartbeats run
        if (identity := process_identity()) is not None:
            set_trial_system_attr(trial, WORKER_PROCESS_ATTR, identity)
        try:
            values = objective(trial)
            outcome = state.COMPLETE
        except optuna.TrialPruned as reason:
            outcome = state.PRUNED
            trial.set_user_attr(PRUNE_REASON, str(reason) or "pruned")
            _logger.info("trial %d pruned: %s", trial.number, reason)
        except Exception as error:
            outcome = state.FAIL
            _logger.warning("trial %d failed: %s: %s", trial.number, type(error).__name__, error, exc_info=error)
        except KeyboardInterrupt:
            trial.set_user_attr(FAIL_REASON, "interrupted (Ctrl-C)")
            study.tell(trial, state=state.FAIL)
            raise
    set_trial_system_attr(trial, FINISHED_ATTR, datetime.datetime.now(datetime.UTC).isoformat())
    with warnings.catch_warnings():  # values Optuna refuses (NaN) fail the trial with a warning
        warnings.simplefilter("ignore", UserWarning)
        return study.tell(trial, values if outcome == state.COMPLETE else None, state=outcome)


def held(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials that workers are running (others may be RUNNING without a worker that
    sends heartbeats, e.g. asked for by hand: waiting for those would never end)."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return [trial for trial in running if WORKER_ATTR in trial.system_attrs]


def worker_id(pid: int | None = None) -> str:
    """Who runs a trial: ``host:pid`` (this process unless ``pid`` is given, on this host)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def fail_trials_of(study: optuna.Study, worker: str, reason: str, retry: bool = True) -> list[int]:
    """Fail the trials ``worker`` (see :func:`worker_id`) was running and, with ``retry``, re-queue
    them with their parameters, as a stale heartbeat would, but now; returns their numbers."""
    import optuna

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.system_attrs.get(WORKER_ATTR) == worker and fail_and_requeue(study, trial, reason, retry):
            failed.append(trial.number)
    return failed
