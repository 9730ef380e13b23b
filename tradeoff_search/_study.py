"""Running a study: storage, sampler, resume, the MLflow record."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tradeoff_search._builders import Builder
from tradeoff_search._data import Dataset, load_dataset
from tradeoff_search._encoding import PREPROCESSING_ATTR
from tradeoff_search._objective import TradeoffObjective
from tradeoff_search._retime import retime_front
from tradeoff_search._space import narrowest_models
from tradeoff_search._spec import SpecError, StudySpec
from tradeoff_search._tracking import MLflowParetoCallback
from tradeoff_search._user_builders import record_of
from tradeoff_search._workers import Tickets, storage_lock, work

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

_logger = logging.getLogger(__name__)
_SCHEMA_ATTEMPTS = 3

STATE_DIR = Path("mlruns")
DEFAULT_STORAGE = f"sqlite:///{STATE_DIR}/optuna.db"
DEFAULT_TRACKING_URI = f"sqlite:///{STATE_DIR}/mlflow.db"
BUILDERS_ATTR = "builders"  # the study's record of its user builders
TRIALS_PER_PROCESS = 15  # a worker process retires after this many trials (see _run_worker_processes)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs), even if malformed."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. an unclosed IPv6 bracket: hide whatever sits between ':' and '@'
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # with or without a driver: postgresql+psycopg
_TRACKING_SCHEMES = (*_DATABASES, "http", "https", "databricks")


def check_stores(storage: str, tracking_uri: str) -> None:
    """Fail fast, before anything is loaded or written, on an Optuna storage or MLflow tracking
    URI that could not be used: each must parse, have a scheme its library takes, and be
    reachable (a SQLite file in an existing folder that is a database if it exists; a database
    server that answers; an MLflow server's ``/health``)."""
    _check_store("--storage", "storage", storage, _DATABASES)
    check_tracking_uri(tracking_uri)


def check_tracking_uri(uri: str) -> None:
    """:func:`check_stores` for the MLflow tracking URI alone.

    A server is asked for ``/health`` (MLflow's own client would retry for minutes); MLflow 3.17
    no longer accepts plain-folder stores.
    """
    import http.client
    import urllib.error
    import urllib.request

    scheme = _check_store("--tracking-uri", "tracking_uri", uri, _TRACKING_SCHEMES)
    if scheme in ("http", "https"):
        # Credentials go to MLflow by MLFLOW_TRACKING_USERNAME/PASSWORD; the probe needs none.
        parts = urlsplit(uri)
        netloc = parts.netloc.rpartition("@")[2]
        health = urlunsplit((scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=5) as answer:
                answer.read(64)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise SpecError(
                "--tracking-uri", "tracking_uri", redact(uri), f"a reachable MLflow server ({reason})"
            ) from None


def _check_store(flag: str, key: str, url: str, schemes: tuple[str, ...]) -> str:
    """Parse ``url``, check its scheme is one of ``schemes`` and, for a database, that it can be
    used without writing to it; returns the scheme without its driver."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as error:
        raise SpecError(flag, key, redact(url), f"a valid URL ({error})") from None
    scheme = parts.scheme.partition("+")[0]
    if scheme not in schemes:
        example = "sqlite:///mlruns/optuna.db" if flag == "--storage" else "sqlite:///mlruns/mlflow.db or a server URL"
        raise SpecError(flag, key, redact(url), f"a URL of {', '.join(schemes)}, such as {example}")
    if scheme == "sqlite":
        _check_sqlite_file(flag, key, url)
    elif scheme in _DATABASES:
        _probe_database(flag, key, url)
    return scheme


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (relative to the working directory unless absolute)."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _check_sqlite_file(flag: str, key: str, url: str) -> None:
    path = _sqlite_path(url)
    if path is None:  # e.g. "sqlite://": SQLite in memory, gone with the process
        raise SpecError(flag, key, url, "a SQLite file, sqlite:///PATH")
    if path.parent != STATE_DIR and not path.parent.is_dir():  # mlruns/ itself is made for the defaults
        raise SpecError(flag, key, url, f"a SQLite file in an existing folder ({path.parent} is missing)")
    if path.exists() and not _is_sqlite_database(path):
        raise SpecError(flag, key, url, f"a SQLite database file ({path} is something else)")


def _is_sqlite_database(path: Path) -> bool:
    """A SQLite file by its header; an empty file is an empty database to SQLite."""
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError:  # a folder, or unreadable
        return False
    return head in (b"", b"SQLite format 3\x00")


def _has_optuna_tables(path: Path) -> bool:
    import sqlite3

    if not path.is_file() or not _is_sqlite_database(path):  # opening it would create one
        return False
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as database:
        found = database.execute("select 1 from sqlite_master where type = 'table' and name = 'studies'")
        return found.fetchone() is not None


def _probe_database(flag: str, key: str, url: str) -> None:
    """Connect once (5 s at most) and disconnect: a server that is down, or a wrong password,
    fails here with the database's own reason instead of after minutes of retries."""
    import sqlalchemy

    connect_args = {"connect_timeout": 5} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpecError(flag, key, redact(url), f"a reachable database ({message})") from None


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler; with a latency budget and several families, one that redraws a family
    the budget has ruled out (see :class:`~tradeoff_search._redraw.RedrawingSampler`)."""
    import optuna

    seed = spec.study.seed
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    }
    sampler = samplers[spec.study.sampler]()
    if spec.latency.budget_ms is None or len(spec.model.families.choices) == 1:
        return sampler
    from tradeoff_search._objective import ruled_out
    from tradeoff_search._redraw import RedrawingSampler

    # A GP proposal is costly and nearly the same when asked again (measured: 3 redraws took a
    # 40-trial study's sampling from 9 s to 31 s): replace its family at once instead.
    attempts = 0 if spec.study.sampler == "gp" else 3
    return RedrawingSampler(sampler, lambda study, family: ruled_out(study, spec, family), attempts, seed)


def _prepare_local_state(*urls: str) -> None:
    """Create ``mlruns/`` only when a local store will live right in it (not in a subfolder)."""
    if any(path.parent == STATE_DIR for path in map(_sqlite_path, urls) if path is not None):
        STATE_DIR.mkdir(exist_ok=True)


def make_storage(spec: StudySpec, url: str) -> optuna.storages.BaseStorage | str:
    """Optuna's RDB storage with heartbeats: a trial whose worker went silent for two heartbeats
    is failed and re-queued (at most twice) with the same parameters."""
    import optuna
    import sqlalchemy

    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return url
    # SQLite: several local workers write in turn; wait for the lock instead of failing.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    beat = spec.study.heartbeat_seconds
    with warnings.catch_warnings():  # heartbeats are experimental in Optuna, and what crash safety needs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        open_storage = functools.partial(
            optuna.storages.RDBStorage,
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=beat,
            grace_period=2 * beat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
        )
        for attempt in range(1, _SCHEMA_ATTEMPTS):
            # Workers started together on a fresh database race to create Optuna's tables and
            # stamp their version; the losers fail on a duplicate. Once created, they just open.
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                storage = open_storage()
                break
            time.sleep(0.2 * attempt)
        else:
            storage = open_storage()  # the last attempt raises what it meets
    if url.startswith("sqlite"):
        _write_ahead_log(storage.engine)
    return storage


def _write_ahead_log(engine: sqlalchemy.engine.Engine) -> None:
    """Put a SQLite study in write-ahead-log mode, syncing at checkpoints only.

    Optuna commits every parameter and attribute on its own (~15 per trial); with SQLite's
    default rollback journal each commit syncs the disk twice. In WAL mode a commit is one append
    and readers do not wait for the writer (local workers). A power cut may lose the last
    commits, never corrupt the file. Measured on a digits study: the proposals of a trial 39 → 22 ms,
    its attributes 22 → 14 ms.
    """
    import sqlalchemy

    def on_connect(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file: every process then uses it
        cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # the connections Optuna opened to create its tables get them on reconnect


def open_study(
    spec: StudySpec,
    storage: str = DEFAULT_STORAGE,
    *,
    create: bool = True,
    builders: Mapping[str, Mapping[str, str]] | None = None,
    accept_builder_change: bool = False,
) -> optuna.Study:
    """The spec's study in ``storage``: created on first use, resumed after.

    ``builders``, the records of the user builders searched (see
    :attr:`TradeoffObjective.builder_records`), are kept in the study's user attribute
    ``builders``; resuming with a builder whose source file changed is refused unless
    ``accept_builder_change`` (trials before and after would not be of one space).

    Raises:
        SpecError: the storage cannot be reached, the study does not exist (``create=False``),
            or it exists with other objectives, or a builder's source changed since it began.
    """
    import optuna
    import sqlalchemy.exc

    if create:
        _prepare_local_state(storage)
    elif (path := _sqlite_path(storage)) is not None and not _has_optuna_tables(path):
        # Loading would create Optuna's tables: a query must not write.
        raise SpecError(spec.path, "study.name", spec.study.name, f"a study in {redact(storage)} (run it first)")
    try:
        rdb = make_storage(spec, storage)
        if create:
            study = optuna.create_study(
                study_name=spec.study.name,
                storage=rdb,
                directions=spec.directions,
                sampler=make_sampler(spec),
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(study_name=spec.study.name, storage=rdb, sampler=make_sampler(spec))
    except KeyError:
        raise SpecError(
            spec.path, "study.name", spec.study.name, f"a study in {redact(storage)} (run it first)"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpecError("--storage", "storage", redact(storage), f"a reachable Optuna storage ({message})") from None
    if [d.name.lower() for d in study.directions] != spec.directions:
        found = [d.name.lower() for d in study.directions]
        raise SpecError(
            spec.path, "study.name", spec.study.name, f"a study with directions {spec.directions}, not {found}"
        )
    if create:
        if study.metric_names is None:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, and what plots and callbacks read
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(spec.metric_names)
        previous = study.user_attrs.get("spec_digest")
        if previous is None:
            study.set_user_attr("spec_digest", spec.digest)
        elif previous != spec.digest:
            _logger.warning(
                "study %r resumes under a changed spec (%s, was %s)", spec.study.name, spec.digest, previous
            )
        _record_builders(study, spec, builders or {}, accept_builder_change)
    return study


def _record_builders(
    study: optuna.Study, spec: StudySpec, builders: Mapping[str, Mapping[str, str]], accept_change: bool
) -> None:
    """Keep the builders' records in the study; refuse one whose source changed since it was kept."""
    stored = study.user_attrs.get(BUILDERS_ATTR) or {}
    for name, record in builders.items():
        before = stored.get(name, {}).get("sha256")
        if before is None or before == record.get("sha256"):
            continue
        now = record.get("sha256", "none")
        change = f"{record.get('path', record['target'])} changed: sha256 {before[:12]} then, {now[:12]} now"
        if not accept_change:
            source, key = (spec.path, spec.builder_key(name)) if name in spec.builder_sources else ("build", name)
            expected = f"the builder source study {spec.study.name!r} began with ({change}); restore it, "
            raise SpecError(source, key, record["target"], f"{expected}or resume with --accept-builder-change")
        _logger.warning("study %r resumes with builder %r changed (%s)", spec.study.name, name, change)
    if builders and {**stored, **builders} != stored:
        study.set_user_attr(BUILDERS_ATTR, {**stored, **builders})


def staging_dir(spec: StudySpec) -> Path:
    """Where trials leave their models for the MLflow callback (emptied as they are logged)."""
    return STATE_DIR / "staging" / spec.study.name


def make_callback(
    spec: StudySpec,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    builders: Mapping[str, Mapping[str, str]] | None = None,
) -> MLflowParetoCallback:
    """The MLflow callback for the spec's study, with the spec logged on the parent run, and the
    user builders' targets, source paths and hashes as its tags ``builder.NAME.target``, …"""
    _prepare_local_state(tracking_uri)
    builder_tags = {f"builder.{name}.{key}": value for name, record in (builders or {}).items()
                    for key, value in record.items()}  # fmt: skip
    return MLflowParetoCallback(
        tracking_uri=tracking_uri,
        experiment=spec.tracking.experiment,
        hypervolume_reference=spec.hypervolume_reference,
        log_models=spec.tracking.log_models,
        model_dir=staging_dir(spec),
        parent_tags={"spec.digest": spec.digest, "spec.path": str(spec.path), **builder_tags},
        parent_artifacts={"spec.json": spec.to_dict()},
    )


def finished_count(study: optuna.Study) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


def run_study(
    spec: StudySpec,
    *,
    storage: str = DEFAULT_STORAGE,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    data: Dataset | None = None,
    workers: int = 0,
    show_progress_bar: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    finish: bool = True,
    build: Builder | Mapping[str, Builder] | None = None,
    accept_builder_change: bool = False,
) -> optuna.Study:
    """Run (or resume) the spec's study until it has ``study.n_trials`` trials.

    Data and stores are checked before anything is written, so a bad spec leaves nothing behind.
    ``workers = 0`` runs the trials in this process; ``workers = N`` in N worker processes sharing
    the study (TensorFlow threads split between them), each replaced by a fresh one every
    ``TRIALS_PER_PROCESS`` trials so that memory stays flat however long the study. On other
    machines, ``run`` with the same ``storage`` joins the same study.
    Every trial is logged to MLflow as it ends. With ``finish`` (the default), the Pareto set is
    then re-timed side by side and the MLflow record completed (``pareto.csv``, plots), also
    after Ctrl-C.

    ``build`` searches your own builder(s) instead of the spec's families (see
    :class:`TradeoffObjective`); each is built once before the study opens (see
    :meth:`TradeoffObjective.check_builders`). A study whose builder source file changed
    resumes only with ``accept_builder_change``.

    Raises:
        ValueError: ``workers`` is not an int >= 0; or, with worker processes, which load the
            spec from its file, the data from its source and the builders the spec names,
            ``spec`` differs from its file, ``data`` holds arrays of your own or ``build`` is
            not what the spec names (pass those with ``workers=0``).
        SpecError: a store cannot be used, the data source is bad, a builder breaks the
            contract, or its source changed since the study began.
    """
    for name, url in {"storage": storage, "tracking_uri": tracking_uri}.items():
        if not isinstance(url, str):  # e.g. an InMemoryStorage: neither resumable nor shared with workers
            raise TypeError(f"{name}: expected a URL string such as sqlite:///mlruns/..., got {type(url).__name__}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers={workers!r}: expected 0 (this process) or a number of worker processes")
    if workers > 0 and data is not None and getattr(data, "source", None) != spec.data.source:
        raise ValueError(f"data with workers={workers}: worker processes load the spec's data source "
                         f"({spec.data.source}), not these arrays; pass them with workers=0")  # fmt: skip
    if workers > 0 and not _is_its_file(spec):
        raise ValueError(f"spec with workers={workers}: worker processes load the spec from {spec.path}, "
                         "which says otherwise (or is no file); save it there, or use workers=0")  # fmt: skip
    if workers > 0 and build is not None and not _names_its_builders(spec, build):
        raise ValueError(f"build with workers={workers}: worker processes load the builders {spec.path} names "
                         "([model] builder(s)), not these; name them there or use workers=0")  # fmt: skip
    study, objective, callback = _session(spec, storage, tracking_uri, data, build, accept_builder_change)
    spec = objective.spec  # searching build's families, if given
    _logger.info(
        "study %r: %d trials on %s, %d worker(s); Optuna %s, MLflow %s",
        spec.study.name,
        spec.study.n_trials,
        spec.data.source,
        workers,
        redact(storage),
        redact(tracking_uri),
    )
    if spec.latency.budget_ms is not None:
        _queue_narrowest_models(study, spec, storage)
    tickets = Tickets(study, spec.study.n_trials, storage)
    callback.start(study)
    progress = _Progress(study, spec.study.n_trials, show_progress_bar)
    try:
        if workers == 0:
            work(study, objective, [callback, *callbacks], spec.study.timeout, progress.refresh, tickets=tickets)
        else:
            _run_worker_processes(spec, storage, tracking_uri, workers, progress, tickets)
    finally:
        progress.close()
        if finish:
            if finished_count(study):
                retime_front(study, objective)
            callback.sync(study)  # also logs trials a crashed worker left unrecorded
    return study


def _is_its_file(spec: StudySpec) -> bool:
    """Whether ``spec`` is what its file says, up to the study settings ``run`` passes as flags."""
    try:
        stored = StudySpec.load(spec.path)
    except SpecError:
        return False
    return stored.override(n_trials=spec.study.n_trials, timeout=spec.study.timeout).to_dict() == spec.to_dict()


def _names_its_builders(spec: StudySpec, build: Builder | Mapping[str, Builder]) -> bool:
    """Whether ``build`` is the builders ``spec`` names: the same families, each the function of
    the spec's target (by source file and name)."""
    named = dict(build) if isinstance(build, Mapping) else {getattr(build, "__name__", ""): build}
    sources = spec.builder_sources
    return list(named) == list(spec.model.families.choices) and all(
        name in sources
        and record_of(builder).get("path") == str(sources[name].path)
        and getattr(builder, "__name__", None) == sources[name].function
        for name, builder in named.items()
    )


def _queue_narrowest_models(study: optuna.Study, spec: StudySpec, storage: str) -> None:
    """A new study with a latency budget first times the narrowest model of each family: if even
    that is over the budget, so is every candidate of the family with the same operators, and the
    objective records those without building them (on MNIST-1D no GRU of the space runs under
    25 µs, and each takes 2–4 s to convert)."""
    with storage_lock(storage, study.study_name):  # one run seeds the queue, however many start
        if not study.get_trials(deepcopy=False):
            for params in narrowest_models(spec)[: spec.study.n_trials]:
                study.enqueue_trial(params)


def run_worker(spec: StudySpec, storage: str, tracking_uri: str, data: Dataset | None = None) -> int:
    """One of ``run --workers``' processes: run at most ``TRIALS_PER_PROCESS`` of the trials its
    coordinator queues, then retire; returns how many ran."""
    study, objective, callback = _session(spec, storage, tracking_uri, data)
    return work(study, objective, [callback], spec.study.timeout, max_trials=TRIALS_PER_PROCESS)


def _session(
    spec: StudySpec,
    storage: str,
    tracking_uri: str,
    data: Dataset | None,
    build: Builder | Mapping[str, Builder] | None = None,
    accept_builder_change: bool = False,
) -> tuple[optuna.Study, TradeoffObjective, MLflowParetoCallback]:
    """The study, objective and MLflow callback of a run, after checking data, stores and builders."""
    check_stores(storage, tracking_uri)
    data = data if data is not None else load_dataset(spec)
    model_dir = staging_dir(spec) if spec.tracking.log_models != "none" else None
    objective = TradeoffObjective(spec, data=data, model_dir=model_dir, build=build)
    objective.check_builders()
    records = objective.builder_records
    study = open_study(objective.spec, storage, builders=records, accept_builder_change=accept_builder_change)
    if data.preprocessing is not None:  # what a deployment applies to raw rows (select ships it)
        study.set_user_attr(PREPROCESSING_ATTR, data.preprocessing)
    callback = make_callback(objective.spec, tracking_uri, records)
    objective.calibrate(study)  # once, before any worker times a trial
    return study, objective, callback


class _Progress:
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


def _run_worker_processes(
    spec: StudySpec, storage: str, tracking_uri: str, workers: int, progress: _Progress, tickets: Tickets
) -> None:
    """Keep ``workers`` processes of ``run --worker`` busy on this machine while this run has
    tickets left, with two queued per worker so that none finds the queue empty between trials.

    Each has its share of the cores and runs at most ``TRIALS_PER_PROCESS`` trials: TensorFlow
    keeps growing in a long-lived process (~4-6 MB a trial here, from training, even with
    the Keras session cleared), so a fresh process takes over instead.
    """
    import subprocess
    import sys

    import optuna

    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": threads}
    command = [
        sys.executable, "-m", "tradeoff_search", "run", str(spec.path), "--worker", "--no-progress",
        "--storage", storage, "--tracking-uri", tracking_uri, "--n-trials", str(spec.study.n_trials),
    ]  # fmt: skip
    deadline = None if spec.study.timeout is None else time.monotonic() + spec.study.timeout

    def queued() -> bool:
        """Top the queue up, until the deadline; whether any ticket is waiting."""
        if deadline is not None and time.monotonic() >= deadline:
            return False
        waiting = len(progress.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        return waiting + (tickets(2 * workers - waiting) if waiting < 2 * workers else 0) > 0

    def start() -> subprocess.Popen[bytes]:
        timeout = [] if deadline is None else ["--timeout", f"{max(1.0, deadline - time.monotonic()):.0f}"]
        return subprocess.Popen([*command, *timeout], env=env, stdout=subprocess.DEVNULL)

    children = [start() for _ in range(workers) if queued()]
    abnormal: list[int] = []
    try:
        while children:
            progress.refresh()
            queued()
            time.sleep(1)
            for child in [c for c in children if c.poll() is not None]:
                children.remove(child)
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
