"""The pool: worker processes of one study on this machine, started, told to leave and ended.

Worker processes run ``python -m tradeoff_search.study._worker`` (see :func:`worker_command`), not the
command line: the library starts its own workers. Each tells its pool how it is doing (see
``tradeoff_search.process._channel``): a worker whose memory has grown past ``[study]
worker_growth_mb`` is replaced by a fresh one, started before it leaves; a worker whose conversion
overruns ``[latency] conversion_timeout`` is ended; a worker that failed on a store or a file stops
the run. What becomes of the trials of a worker that ended: ``_supervision``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tradeoff_search.process._channel import Done, Failed, Inbox, Limit, Ready, Retire
from tradeoff_search.rules import SpecError
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.stores import STATE_DIR, STORAGE_ENV, TRACKING_ENV
from tradeoff_search.study._tickets import Tickets


class WorkersFailed(RuntimeError):
    """Worker processes kept ending abnormally, so the run gave up (see ``_supervision.MAX_DEATHS_IN_A_ROW``)."""


class StoreFailed(WorkersFailed):
    """A worker process met a failure that its replacement would meet too (a store or file it
    cannot use: an MLflow server that does not answer, a read-only or full disk, a changed
    builder), so the run stopped; the message is the worker's one line and names its log."""


class Pool:
    """``workers`` worker processes on this machine, supervised (see
    :func:`~tradeoff_search.study._supervision.run_worker_processes`)."""

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
                    "OMP_NUM_THREADS": threads, **worker_environment(storage, tracking_uri, spec)}  # fmt: skip
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

        if self.over():
            return False
        waiting = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        want = 2 * self.workers
        return waiting + (self.tickets(want - waiting) if waiting < want else 0) > 0

    def over(self) -> bool:
        """Whether the run's timeout has passed, or ``stop()`` says so."""
        return (self.deadline is not None and time.monotonic() >= self.deadline) or bool(self.stop and self.stop())

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

    def forget(self, pid: int) -> str | None:
        """Forget the worker ``pid``, which has ended (one it was to replace leaves anyway); returns
        why it was killed if it overran a time limit (see :meth:`end_overruns`)."""
        del self.children[pid]
        self.retiring.discard(pid)
        self.limits.pop(pid, None)
        if pid in self.replacing:  # it died loading: the one it was to replace leaves anyway
            self.retire(self.replacing.pop(pid))
        return self.overran.pop(pid, None)

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


# A worker process's builders' sha256 as its run hashed them, {name: sha256}: the storage alone
# (whoever can write to it) must not choose the code worker processes import.
BUILDERS_ENV = "TRADEOFF_SEARCH_BUILDERS"


def worker_environment(storage: str, tracking_uri: str, spec: StudySpec) -> dict[str, str]:
    """The variables that give a worker process its stores (see :func:`worker_command`) and the
    hashes of the builders ``spec`` names (see :func:`check_builders_hashed`)."""
    hashed = {name: source.sha256 for name, source in spec.builder_sources.items()}
    return {STORAGE_ENV: storage, TRACKING_ENV: tracking_uri, BUILDERS_ENV: json.dumps(hashed)}


def check_builders_hashed(spec: StudySpec, hashed: str | None) -> None:
    """In a worker process, before any builder is imported: each builder of ``spec`` (the study's,
    from its storage) has the source its run hashed (``hashed``, :data:`BUILDERS_ENV`).

    Raises:
        SpecError: a builder's source is another file or changed, or its run hashed none.
    """
    expected = json.loads(hashed or "{}")
    for name, source in spec.builder_sources.items():
        if expected.get(name) != source.sha256:
            then = (expected.get(name) or "none")[:12]
            raise SpecError(spec.path, spec.builder_key(name), source.target,
                            f"the builder source its run hashed ({source.path}: sha256 {then} then, "
                            f"{source.sha256[:12]} now); a worker imports no other")  # fmt: skip
