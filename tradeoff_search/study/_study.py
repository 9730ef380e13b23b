"""Running a study: open it (``_open``), then orchestrate data, objective, trial loop and MLflow
record (the trial loop: ``_loop``; worker processes: ``_pool`` and ``_supervision``; the latency
server watched: ``_device_watch``; the record finished: ``_finish``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from tradeoff_search.cost import lock_path
from tradeoff_search.cost._device_client import DeviceUnreachable
from tradeoff_search.data._dataset import Dataset, load_dataset
from tradeoff_search.rules import Described, Interval, Scalar, excerpt
from tradeoff_search.space._builders import Builder, keras_classes
from tradeoff_search.space._space import narrowest_models
from tradeoff_search.spec._builder_source import record_of
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.spec._validation import validate_params
from tradeoff_search.stores import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    check_stores,
    known_failure,
    redact,
    storage_lock,
)
from tradeoff_search.study._device_watch import MAX_DEVICE_FAILURES, check_device, device_stop
from tradeoff_search.study._finish import finish_record, make_callback
from tradeoff_search.study._loop import Callback, work
from tradeoff_search.study._open import open_study
from tradeoff_search.study._pool import StoreFailed
from tradeoff_search.study._progress import Progress
from tradeoff_search.study._retirement import Retirement
from tradeoff_search.study._supervision import run_worker_processes
from tradeoff_search.study._tickets import Tickets
from tradeoff_search.tracking._callback import MLflowParetoCallback
from tradeoff_search.trial._objective import TradeoffObjective
from tradeoff_search.trial._staging import staging_dir

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

_Session = tuple["optuna.Study", TradeoffObjective, MLflowParetoCallback]  # see _session


@validate_params(workers=Described(Scalar(int, Interval(0)), "0 (this process) or a number of worker processes"))
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
    accept_data_change: bool = False,
    spec_changed: bool = False,
) -> optuna.Study:
    """Run (or resume) the spec's study until it has ``study.n_trials`` trials.

    A study keeps the spec it was created with (all but ``n_trials`` and ``timeout``): resuming
    it with another is refused unless ``spec_changed``, with which the study goes on under ``spec``.
    Worker processes run under the spec stored in the study, so an edit of the file mid-run
    changes nothing (see :func:`stored_spec`).

    Data and stores are checked before anything is written, so a bad spec leaves nothing behind.
    ``workers = 0`` runs the trials in this process; ``workers = N`` in N worker processes sharing
    the study (TensorFlow threads split between them), supervised: one that dies is replaced (its
    trial failed and re-queued), one whose memory grew past ``[study] worker_growth_mb`` is
    replaced by a fresh one. On other machines, ``run`` with the same ``storage`` joins the same
    study; a run ends when no trial of the study is left to run or running (or at its timeout).
    Every trial is logged to MLflow as it ends. With ``finish`` (the default), the Pareto set is then
    re-timed side by side and the MLflow record completed (``pareto.csv``, plots), also after Ctrl-C.

    ``build`` searches your own builder(s) instead of the spec's families (see
    :class:`TradeoffObjective`); each is built once before the study opens (see
    :meth:`TradeoffObjective.check_builders`). A study whose builder source file changed resumes
    only with ``accept_builder_change``, one whose data file (or image folder) changed only with
    ``accept_data_change``.

    Raises:
        ParameterError: ``workers`` is not an int >= 0.
        ValueError: with worker processes (which run under the spec stored in the study and load
            its data source and the builders it names), ``data`` holds arrays of your own or
            ``build`` is not what the spec names (pass those with ``workers=0``).
        SpecError: a store cannot be used, the data source is bad, a builder breaks the contract,
            its source or the data changed since the study began, or ``spec`` is not the one the
            study was created with (and not ``spec_changed``).
        RunError: the spec's latency server does not answer, or no latency lock folder can be made.
        WorkersFailed: worker processes kept ending abnormally (the message names their exit
            codes and the last one's log); the MLflow record is completed first. Its subclass
            ``StoreFailed``: a worker failed on a store or a file (its one line and log).
        RecordIncomplete: with ``finish``, the MLflow record still lacks part of the study after
            its repair (the message says what; ``sync`` completes it once the cause is fixed).

    A store or file failure (:class:`StoreFailed`, an MLflow or database error, a full disk)
    stops the study without finishing the record, which ``sync`` then repairs: finished
    trials are in the Optuna storage, a half-written run is logged again, a staged model logged.
    """
    _check_run_arguments(spec, storage, tracking_uri, data, workers, build)
    session = _session(spec, storage, tracking_uri, data, build, accept_builder_change=accept_builder_change,
                       accept_data_change=accept_data_change, spec_changed=spec_changed)  # fmt: skip
    return _run(session, storage, tracking_uri, workers, show_progress_bar, callbacks, finish)


def _check_run_arguments(
    spec: StudySpec,
    storage: str,
    tracking_uri: str,
    data: Dataset | None,
    workers: int,
    build: Builder | Mapping[str, Builder] | None,
) -> None:
    """The errors of :func:`run_study` for stores that are no URLs, and for arrays or builders
    that worker processes would not load."""
    for name, url in {"storage": storage, "tracking_uri": tracking_uri}.items():
        if not isinstance(url, str):  # e.g. an InMemoryStorage: neither resumable nor shared with workers
            raise TypeError(f"{name}: expected a URL string such as sqlite:///mlruns/..., got {type(url).__name__}")
    if workers > 0 and data is not None and getattr(data, "source", None) != spec.data.source:
        raise ValueError(f"data with workers={workers}: worker processes load the spec's data source "
                         f"({spec.data.source}), not these arrays; pass them with workers=0")  # fmt: skip
    if workers > 0 and build is not None and not _names_its_builders(spec, build):
        raise ValueError(f"build with workers={workers}: worker processes load the builders {spec.path} names "
                         "([model] builder(s)), not these; name them there or use workers=0")  # fmt: skip
    lock_path()  # trainings and timings take it: a folder it cannot be made in fails here, before any store is written


def _run(
    session: _Session,
    storage: str,
    tracking_uri: str,
    workers: int,
    show_progress_bar: bool,
    callbacks: Sequence[Callback],
    finish: bool,
) -> optuna.Study:
    """Run the trials of an opened session (see :func:`run_study`) in this process or in
    ``workers`` worker processes, then, with ``finish``, complete its MLflow record."""
    study, objective, callback = session
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
    with storage_lock(storage, study.study_name):  # one parent run, however many runs start at once
        callback.start(study)
    progress = Progress(study, spec.study.n_trials, show_progress_bar)
    stop = device_stop(spec, study)
    try:
        if workers == 0:
            work(study, objective, [objective.add_variants, callback, *callbacks], spec.study.timeout,
                 progress.refresh, tickets=tickets, stop=stop, storage_url=storage)  # fmt: skip
        else:
            run_worker_processes(spec, storage, tracking_uri, workers, progress, tickets, stop)
    except BaseException as error:
        progress.close()
        # A store that failed would fail again (an MLflow server that does not answer, after
        # minutes of its client's retries): the record is left for sync, which repairs it.
        if finish and not isinstance(error, StoreFailed) and known_failure(error) is None:
            try:
                finish_record(study, objective, callback)
            except Exception as cleanup:  # the first failure is the one to report
                _logger.warning("after %s, the MLflow record was not completed (%s: %s); run sync",
                                type(error).__name__, type(cleanup).__name__, excerpt(str(cleanup), 200))  # fmt: skip
        raise
    progress.close()
    if finish:
        finish_record(study, objective, callback)
    if stop is not None and stop():
        raise DeviceUnreachable(
            f"latency server {spec.latency.device}: the last {MAX_DEVICE_FAILURES} trials failed because it did not "
            "answer, so the study stopped; run the same command again once it is back to resume"
        )
    return study


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
    """One of ``run --workers``' processes: run the trials its coordinator queues until none is
    left or its memory has grown past ``[study] worker_growth_mb`` (see
    :class:`~tradeoff_search.study._retirement.Retirement`); returns how many ran."""
    retirement = Retirement(spec.study.worker_growth_mb)  # first: the pool may signal it at any time
    study, objective, callback = _session(spec, storage, tracking_uri, data)
    retirement.ready()
    device_lost = device_stop(spec, study)

    def stop() -> bool:
        return retirement.due() or (device_lost is not None and device_lost())

    return work(study, objective, [objective.add_variants, callback], spec.study.timeout, retirement.after_trial,
                stop=stop, storage_url=storage)  # fmt: skip


def _session(
    spec: StudySpec,
    storage: str,
    tracking_uri: str,
    data: Dataset | None,
    build: Builder | Mapping[str, Builder] | None = None,
    *,
    accept_builder_change: bool = False,
    accept_data_change: bool = False,
    spec_changed: bool = False,
) -> _Session:
    """The study, objective and MLflow callback of a run, after checking the device, data, stores and builders."""
    device = check_device(spec)
    check_stores(storage, tracking_uri)
    data = data if data is not None else load_dataset(spec)
    model_dir = staging_dir(spec) if spec.tracking.log_models != "none" else None
    objective = TradeoffObjective(spec, data=data, model_dir=model_dir, build=build)
    objective.check_builders()
    records = objective.builder_records
    study = open_study(
        objective.spec,
        storage,
        builders=records,
        data=data,
        accept_builder_change=accept_builder_change,
        accept_data_change=accept_data_change,
        spec_changed=spec_changed,
    )
    callback = make_callback(objective.spec, tracking_uri, records, keras_classes(objective.builders.values()))
    if device:
        _logger.info("timing on %s: %s", spec.latency.device, ", ".join(str(v) for v in device.values()))
    objective.calibrate(study)  # once, before any worker times a trial
    return study, objective, callback
