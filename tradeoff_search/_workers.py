"""Workers sharing one study: trial tickets, the trial loop with its heartbeats, and the pool of
worker processes on this machine with its progress bar.

Why tickets: Optuna's ``n_trials`` counts per ``optimize`` call and ``MaxTrialsCallback`` checks
after a trial, so workers started together overshoot. Here the study holds at most
``n_trials`` live slots (queued, running or finished trials); each run queues tickets (see
:class:`Tickets`) under a lock that every worker of the storage shares, and workers run only
trials they claim from the queue. A failed trial frees its slot for the next run; a crashed
worker's trial is found stale through its heartbeat, failed, and re-queued with the same
parameters.

Worker processes run ``python -m tradeoff_search._worker`` (see :func:`worker_command`), not the
command line: the library starts its own workers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search._record import FAIL_REASON, PRUNE_REASON
from tradeoff_search._spec import StudySpec
from tradeoff_search._stores import STATE_DIR, storage_lock

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

TRIALS_PER_PROCESS = 15  # a worker process retires after this many trials (see run_worker_processes)

Callback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def live_states() -> tuple[Any, ...]:
    import optuna

    state = optuna.trial.TrialState
    return (state.COMPLETE, state.PRUNED, state.RUNNING, state.WAITING)


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
    stop: Callable[[], bool] | None = None,
) -> int:
    """Run queued trials until the queue is empty (and ``tickets``, asked then, queue no
    more), ``timeout`` seconds have passed, ``max_trials`` ran or ``stop()`` says so after a
    trial; returns how many ran.

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
                trial.set_user_attr(PRUNE_REASON, str(reason) or "pruned")
                _logger.info("trial %d pruned: %s", trial.number, reason)
            except Exception as error:
                outcome = state.FAIL
                _logger.warning("trial %d failed: %s: %s", trial.number, type(error).__name__, error, exc_info=error)
            except KeyboardInterrupt:
                trial.set_user_attr(FAIL_REASON, "interrupted (Ctrl-C)")
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
        if stop is not None and stop():
            break
    return ran


def finished_count(study: optuna.Study) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


class Progress:
    """A progress bar over the study's finished trials (whichever worker finished them)."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.study = study
        # disable=None: no bar when stderr is not a terminal (a log file would get a line a second)
        self.bar = tqdm(total=total, initial=finished_count(study), disable=None if enabled else True, unit="trial")

    def refresh(self) -> None:
        self.bar.n = finished_count(self.study)
        self.bar.refresh()

    def close(self) -> None:
        self.refresh()
        self.bar.close()


def run_worker_processes(
    spec: StudySpec,
    storage: str,
    tracking_uri: str,
    workers: int,
    progress: Progress,
    tickets: Tickets,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Keep ``workers`` worker processes (see :func:`worker_command`) busy on this machine while this run has
    tickets left, with two queued per worker so that none finds the queue empty between trials.

    Each has its share of the cores and runs at most ``TRIALS_PER_PROCESS`` trials: TensorFlow
    keeps growing in a long-lived process (~4-6 MB a trial here, from training, even with
    the Keras session cleared), so a fresh process takes over instead.
    """
    import optuna

    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": threads}
    deadline = None if spec.study.timeout is None else time.monotonic() + spec.study.timeout

    def queued() -> bool:
        """Top the queue up, until the deadline or ``stop()``; whether any ticket is waiting."""
        if (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop()):
            return False
        waiting = len(progress.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        return waiting + (tickets(2 * workers - waiting) if waiting < 2 * workers else 0) > 0

    logs: dict[subprocess.Popen[bytes], Path] = {}

    def start() -> subprocess.Popen[bytes]:
        timeout = None if deadline is None else max(1.0, deadline - time.monotonic())
        command = worker_command(spec, storage, tracking_uri, timeout)
        path = worker_logs(spec) / f"worker-{os.getpid()}-{len(logs) + 1}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as log:  # all its output, TensorFlow's native start-up lines too
            child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        logs[child] = path
        return child

    children = [start() for _ in range(workers) if queued()]
    abnormal: list[int] = []
    try:
        while children:
            progress.refresh()
            queued()
            time.sleep(1)
            for child in [c for c in children if c.poll() is not None]:
                children.remove(child)
                if child.returncode != 0:
                    _logger.warning(
                        "a worker process ended with exit code %d; its log: %s", child.returncode, logs[child]
                    )
                if child.returncode not in (0, 1):
                    abnormal.append(child.returncode)
                elif queued():  # it retired after its share of trials: a fresh one takes over
                    children.append(start())
    finally:
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
    if abnormal:
        _logger.warning("%d worker process(es) ended abnormally (exit codes %s)", len(abnormal), abnormal)


def worker_logs(spec: StudySpec) -> Path:
    """The folder of the study's worker logs (one file per worker process: its whole output, with
    every failed trial's traceback)."""
    return STATE_DIR / "logs" / spec.study.name


def worker_command(spec: StudySpec, storage: str, tracking_uri: str, timeout: float | None) -> list[str]:
    """The command of one worker process of ``spec``'s study (read by ``tradeoff_search._worker``):
    it runs the trials queued in ``storage``, logs them to ``tracking_uri`` and starts no trial
    after ``timeout`` seconds."""
    command = [sys.executable, "-m", "tradeoff_search._worker", str(spec.path), "--n-trials", str(spec.study.n_trials),
               "--storage", storage, "--tracking-uri", tracking_uri]  # fmt: skip
    return command if timeout is None else [*command, "--timeout", f"{timeout:.0f}"]
