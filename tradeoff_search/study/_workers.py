"""Workers sharing one study: trial tickets, the trial loop with its heartbeats, and the pool of
worker processes on this machine with its progress bar.

Why tickets: Optuna's ``n_trials`` counts per ``optimize`` call and ``MaxTrialsCallback`` checks
after a trial, so workers started together overshoot. Here the study holds at most
``n_trials`` live slots (queued, running or finished trials); each run queues tickets (see
:class:`Tickets`) under a lock that every worker of the storage shares, and workers run only
trials they claim from the queue. A failed trial frees its slot for the next run; a crashed
worker's trial is found stale through its heartbeat, failed, and re-queued with the same
parameters.

Worker processes run ``python -m tradeoff_search.study._worker`` (see :func:`worker_command`), not the
command line: the library starts its own workers. The pool supervises them: a worker that ends
abnormally (a signal, a non-zero exit) has its trial failed and re-queued at once and is
replaced, until the study has its trials (unless it failed on a store or a file: the run
stops); a worker whose memory has grown past ``[study] worker_growth_mb`` is replaced by a fresh
one, started before it leaves; a worker whose conversion overruns ``[latency] conversion_timeout``
is ended and replaced, its trial failed for good (see ``tradeoff_search.process._channel``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.process._channel import Done, Failed, Inbox, Limit, Ready, Retire, has_pool, tell_pool
from tradeoff_search.record._keys import FAIL_REASON, PRUNE_REASON, VARIANT_OF, WORKER_ATTR
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.stores._optuna_adapter import (
    claim_waiting_trial,
    fail_and_requeue,
    fail_stale_trials,
    heartbeat,
    set_trial_system_attr,
)
from tradeoff_search.stores._stores import STATE_DIR, STORAGE_ENV, TRACKING_ENV, storage_lock

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

# A worker that dies is replaced; after this many abnormal exits in a row with no trial finished in
# between, the run gives up. A trial whose model kills its worker (say, out of memory) is retried
# twice with its parameters (RetryHeartbeatStaleTrialCallback(max_retry=2)), so three deaths in
# a row can be one bad trial; a fourth means the next trial died too: the environment, not a trial.
MAX_DEATHS_IN_A_ROW = 4
EXIT_INTERRUPTED = 130  # a worker's exit code after Ctrl-C

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
        return len(trainings(self.study, live_states()))

    def __call__(self, limit: int = 1) -> int:
        """Queue up to ``limit`` tickets; returns how many were queued."""
        with storage_lock(self.storage_url, self.study.study_name):
            queued = max(0, min(limit, self.left, self.n_trials - self._live()))
            for _ in range(queued):
                self.study.enqueue_trial({})
        self.left -= queued
        return queued


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
    import optuna

    deadline = None if timeout is None else time.monotonic() + timeout
    state = optuna.trial.TrialState
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
        values: Sequence[float] | None = None
        with heartbeat(trial):
            set_trial_system_attr(trial, WORKER_ATTR, me)  # once heartbeats run
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
    return ran


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


def trainings(study: optuna.Study, states: Sequence[Any]) -> list[optuna.trial.FrozenTrial]:
    """The trials in ``states`` that the sampler proposed, not the variants of a trained model
    added beside them (see ``tradeoff_search.trial._variants``): what ``n_trials`` counts."""
    return [trial for trial in study.get_trials(deepcopy=False, states=states) if VARIANT_OF not in trial.user_attrs]


def finished_count(study: optuna.Study) -> int:
    import optuna

    return len(trainings(study, (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))


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


class WorkersFailed(RuntimeError):
    """Worker processes kept ending abnormally, so the run gave up (see ``MAX_DEATHS_IN_A_ROW``)."""


class StoreFailed(WorkersFailed):
    """A worker process met a failure that its replacement would meet too (a store or file it
    cannot use: an MLflow server that does not answer, a read-only or full disk, a changed
    builder), so the run stopped; the message is the worker's one line and names its log."""


def describe_exit(code: int) -> str:
    """``SIGKILL`` for a process a signal ended, else ``exit N``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
        return f"signal {-code}"
    return f"exit {code}"


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


class _Pool:
    """``workers`` worker processes on this machine, supervised (see :func:`run_worker_processes`)."""

    def __init__(
        self,
        spec: StudySpec,
        storage: str,
        tracking_uri: str,
        workers: int,
        tickets: Tickets,
        stop: Callable[[], bool] | None,
    ) -> None:
        self.spec, self.storage, self.tracking_uri, self.workers = spec, storage, tracking_uri, workers
        self.study, self.tickets, self.stop = tickets.study, tickets, stop
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        self.env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
                    "OMP_NUM_THREADS": threads, **worker_environment(storage, tracking_uri)}  # fmt: skip
        self.deadline = None if spec.study.timeout is None else time.monotonic() + spec.study.timeout
        self.logs = worker_logs(spec)
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.log_of: dict[int, Path] = {}
        self.retiring: set[int] = set()  # asked to leave once their replacement is ready
        self.replacing: dict[int, int] = {}  # replacement pid: the pid of the worker it replaces
        self.limits: dict[int, tuple[float, str]] = {}  # pid: when its work in hand overruns, and why
        self.overran: dict[int, str] = {}  # killed for overrunning a time limit: why
        self.started = 0
        self.inbox = Inbox()

    def queued(self) -> bool:
        """Top the queue up, until the deadline or ``stop()``; whether any ticket is waiting."""
        import optuna

        if (self.deadline is not None and time.monotonic() >= self.deadline) or (self.stop and self.stop()):
            return False
        waiting = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        want = 2 * self.workers
        return waiting + (self.tickets(want - waiting) if waiting < want else 0) > 0

    def working(self) -> int:
        return len(self.children) - len(self.retiring)

    def start(self) -> int:
        timeout = None if self.deadline is None else max(1.0, self.deadline - time.monotonic())
        command = worker_command(self.spec, timeout)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started += 1
        log = self.logs / f"worker-{os.getpid()}-{self.started}.log"
        with log.open("ab") as output:  # the child keeps its own descriptor
            child = subprocess.Popen(command, env={**self.env, **self.inbox.child_env}, stdin=subprocess.DEVNULL,
                                     stdout=output, stderr=subprocess.STDOUT, pass_fds=(self.inbox.write,))  # fmt: skip
        self.children[child.pid] = child
        self.log_of[child.pid] = log
        return child.pid

    def listen(self) -> None:
        """A worker past its memory growth gets a replacement; a ready replacement retires the old
        one; a worker that failed on a store or a file stops the run (:class:`StoreFailed`); a
        worker's time limits are noted (see :meth:`end_overruns`)."""
        for pid, message in self.inbox.received():
            match message:
                case Failed(reason) if pid in self.log_of:
                    raise StoreFailed(f"{reason} (a worker process; its log: {self.log_of[pid]})")
                case Limit(seconds, what):
                    self.limits[pid] = (time.monotonic() + seconds, f"{what} did not finish within {seconds:g} s")
                case Done():
                    self.limits.pop(pid, None)
                case Retire() if pid in self.children and pid not in self.retiring:
                    self.retiring.add(pid)
                    if self.queued():
                        self.replacing[self.start()] = pid
                    else:  # nothing left to run: it may leave now
                        self.retire(pid)
                case Ready() if pid in self.replacing:
                    self.retire(self.replacing.pop(pid))

    def end_overruns(self) -> None:
        """Kill the workers whose work in hand passed its time limit (see
        :func:`~tradeoff_search.process._channel.time_limit`); the supervision loop then fails their
        trials without a retry and replaces them."""
        now = time.monotonic()
        for pid, (deadline, why) in list(self.limits.items()):
            if now > deadline and pid in self.children:
                del self.limits[pid]
                self.overran[pid] = why
                with contextlib.suppress(ProcessLookupError):
                    self.children[pid].kill()

    def retire(self, pid: int) -> None:
        if pid in self.children and hasattr(signal, "SIGUSR1"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)

    def interrupt(self) -> None:
        """Stop every worker as Ctrl-C does: its trial failed, no more MLflow calls (MLflow's client
        would retry a server that does not answer for minutes)."""
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)

    def close(self) -> None:
        for pid in list(self.children):
            self.retire(pid)  # finish the trial at hand, then leave
        for child in self.children.values():
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
        self.inbox.close()


def run_worker_processes(
    spec: StudySpec,
    storage: str,
    tracking_uri: str,
    workers: int,
    progress: Progress,
    tickets: Tickets,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Keep ``workers`` worker processes (see :func:`worker_command`) busy on this machine while this
    run has tickets left, with two queued per worker so that none finds the queue empty between
    trials, and until no trial of the study is left running elsewhere (or the timeout, or ``stop()``).

    Each has its share of the cores and its log in ``mlruns/logs/STUDY/``. A worker that ends
    abnormally (a signal such as the kernel's out-of-memory kill, or a non-zero exit) has its
    trial failed and re-queued with its parameters at once, and a fresh one takes over; after
    ``MAX_DEATHS_IN_A_ROW`` such exits with no trial finished in between, it raises
    :class:`WorkersFailed` naming the exit codes and the last worker's log. A worker that failed
    on a store or a file (it says so, see :func:`tell_pool`) is not replaced, since its
    replacement would fail alike: the other workers are interrupted and it raises
    :class:`StoreFailed` with the worker's one line. A worker whose memory
    has grown past ``[study] worker_growth_mb`` leaves once its replacement has loaded (see
    :class:`Retirement`), so that the replacement's TensorFlow import overlaps its last trials. A
    worker whose work in hand overruns its time limit (a conversion, see
    :func:`~tradeoff_search.process._channel.time_limit`) is killed within a second of it; its trial
    is failed with the reason and not re-queued, and a fresh worker takes over.
    """

    pool = _Pool(spec, storage, tracking_uri, workers, tickets, stop)
    deaths: list[str] = []
    finished_then = finished_count(tickets.study)
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
                del pool.children[pid]
                pool.retiring.discard(pid)
                pool.limits.pop(pid, None)
                if pid in pool.replacing:  # it died loading: the one it was to replace leaves anyway
                    pool.retire(pool.replacing.pop(pid))
                if child.returncode in (EXIT_INTERRUPTED, -signal.SIGINT):  # Ctrl-C: this run's turn next
                    continue
                if pid in pool.overran:  # its trial's fault, known: not a death that counts
                    why = pool.overran.pop(pid)
                    lost = fail_trials_of(tickets.study, worker_id(pid), f"{why}: its worker process was ended",
                                          retry=False)  # fmt: skip
                    _logger.warning("worker process %d: %s%s; ended, and a fresh one takes over", pid, why,
                                    f" (trial {lost[0]}, failed)" if lost else "")  # fmt: skip
                    continue
                if child.returncode != 0:
                    finished_now = finished_count(tickets.study)
                    if finished_now > finished_then:
                        deaths, finished_then = [], finished_now
                    deaths.append(describe_exit(child.returncode))
                    lost = fail_trials_of(tickets.study, worker_id(pid), f"worker process ended ({deaths[-1]})")
                    trial = f", its trial {lost[0]} failed and is re-queued with its parameters" if lost else ""
                    _logger.warning("worker process %d ended abnormally (%s)%s; see %s",
                                    pid, deaths[-1], trial, pool.log_of[pid])  # fmt: skip
                    if len(deaths) >= MAX_DEATHS_IN_A_ROW:
                        raise WorkersFailed(
                            f"{len(deaths)} worker processes in a row ended abnormally with no trial finished "
                            f"in between ({', '.join(deaths)}); read the last one's log: {pool.log_of[pid]}"
                        )
            while pool.working() < workers and pool.queued():
                pool.start()
            if not pool.children:
                over = (pool.deadline is not None and time.monotonic() >= pool.deadline) or (stop and stop())
                if over or not held(tickets.study):
                    return
                fail_stale_trials(tickets.study)  # another run's worker may have died: its trial comes back
            time.sleep(1)
    except StoreFailed:
        pool.interrupt()  # the others would fail on the same store
        raise
    finally:
        pool.close()


def worker_logs(spec: StudySpec) -> Path:
    """The folder of the study's worker logs (one file per worker process: its whole output, with
    every failed trial's traceback)."""
    return STATE_DIR / "logs" / spec.study.name


def worker_command(spec: StudySpec, timeout: float | None) -> list[str]:
    """The command of one worker process of ``spec``'s study (read by ``tradeoff_search.study._worker``):
    it runs the trials queued in the study, under the spec stored there (the file's folder holds
    its relative paths), starts no trial after ``timeout`` seconds and retires past
    ``worker_growth_mb``. The stores' URLs, which may hold passwords, go by
    :func:`worker_environment`: every user of the machine can read a command line."""
    study = spec.study
    command = [sys.executable, "-m", "tradeoff_search.study._worker", str(spec.path), f"--study={study.name}",
               "--n-trials", str(study.n_trials), "--worker-growth-mb", str(study.worker_growth_mb)]  # fmt: skip
    return command if timeout is None else [*command, "--timeout", f"{timeout:.0f}"]


def worker_environment(storage: str, tracking_uri: str) -> dict[str, str]:
    """The variables that give a worker process its stores (see :func:`worker_command`)."""
    return {STORAGE_ENV: storage, TRACKING_ENV: tracking_uri}
