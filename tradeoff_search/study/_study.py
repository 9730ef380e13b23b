"""Running a study: open it with its sampler, then orchestrate data, objective, trial loop and
MLflow record (the trial loop: ``_loop``; worker processes: ``_pool`` and ``_supervision``)."""

from __future__ import annotations

import functools
import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.cost._device_client import DeviceBackend, DeviceError, DeviceUnreachable
from tradeoff_search.cost._harness import LOCAL
from tradeoff_search.data._dataset import Dataset, data_change, data_changed, load_dataset
from tradeoff_search.record._keys import BUILDERS_ATTR, DATA_DIGEST_ATTR, DEVICE_FAILURE, PREPROCESSING_ATTR, SPEC
from tradeoff_search.rules import Described, Interval, RunError, Scalar, SpecError, excerpt
from tradeoff_search.space._builders import Builder, keras_classes, spec_builders
from tradeoff_search.space._space import narrowest_models
from tradeoff_search.spec._builder_source import record_of
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.spec._validation import ParameterError, validate_params
from tradeoff_search.stores import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    check_stores,
    has_optuna_tables,
    known_failure,
    make_storage,
    open_storage,
    prepare_local_state,
    redact,
    sqlite_path,
    storage_lock,
)
from tradeoff_search.study._loop import Callback, work
from tradeoff_search.study._pool import StoreFailed
from tradeoff_search.study._progress import Progress
from tradeoff_search.study._retime import retime_front
from tradeoff_search.study._retirement import Retirement
from tradeoff_search.study._supervision import run_worker_processes
from tradeoff_search.study._tickets import Tickets, finished_count
from tradeoff_search.tracking._callback import MLflowParetoCallback
from tradeoff_search.tracking._repair import RecordIncomplete, SyncReport, may_be_writing
from tradeoff_search.tracking._run_index import study_uid
from tradeoff_search.trial._objective import TradeoffObjective
from tradeoff_search.trial._staging import staging_dir

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

MAX_DEVICE_FAILURES = 3  # trials in a row that lost the latency server: the study stops (resumable)
_Session = tuple["optuna.Study", TradeoffObjective, MLflowParetoCallback]  # see _session


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler; with a latency budget and several families, one that redraws a family
    the budget has ruled out (see :class:`~tradeoff_search.study._redraw.RedrawingSampler`)."""
    import optuna

    seed = spec.study.seed
    # TPE and GP sample at random until 10 trials are COMPLETE or PRUNED: 10 trainings, also when
    # each adds its variants (see _variants). NSGA-II ignores variants: they belong to no generation.
    startup = 10 * len(spec.latency.quantization.choices)
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup),
    }
    sampler = samplers[spec.study.sampler]()
    if spec.latency.budget_ms is None or len(spec.model.families.choices) == 1:
        return sampler
    from tradeoff_search.study._redraw import RedrawingSampler
    from tradeoff_search.trial._screen import ruled_out

    # A GP proposal is costly and nearly the same when asked again (measured: 3 redraws took a
    # 40-trial study's sampling from 9 s to 31 s): replace its family at once instead.
    attempts = 0 if spec.study.sampler == "gp" else 3
    return RedrawingSampler(sampler, lambda study, family: ruled_out(study, spec, family), attempts, seed)


def open_study(
    spec: StudySpec,
    storage: str = DEFAULT_STORAGE,
    *,
    create: bool = True,
    builders: Mapping[str, Mapping[str, str]] | None = None,
    data: Dataset | None = None,
    accept_builder_change: bool = False,
    accept_data_change: bool = False,
    spec_changed: bool = False,
) -> optuna.Study:
    """The spec's study in ``storage``: created on first use (the resolved spec stored in it,
    see ``SPEC``), resumed after under that same spec; with ``spec_changed``, under
    ``spec`` instead, which then becomes the study's.

    ``builders``, the records of the user builders searched (see
    :attr:`TradeoffObjective.builder_records`), are kept in the study's user attribute
    ``builders``; resuming with a builder whose source file changed is refused unless
    ``accept_builder_change`` (trials before and after would not be of one space). Likewise the
    digest of ``data`` loaded from the spec's source (:attr:`Dataset.digest`) is kept in
    ``data_sha256``; resuming with changed data is refused, before anything is written, unless
    ``accept_data_change`` (a model trained on the old rows may not take the new ones).

    Raises:
        SpecError: the storage cannot be reached, the study does not exist (``create=False``),
            it exists with other objectives, a builder's source or the data changed since it
            began, or (``create=True``) ``spec`` differs from the spec it was created with and
            ``spec_changed`` is false.
    """
    import optuna

    if create:
        prepare_local_state(storage)
    elif (path := sqlite_path(storage)) is not None and not has_optuna_tables(path):
        # Loading would create Optuna's tables: a query must not write.
        raise SpecError(spec.path, "study.name", spec.study.name, f"a study in {redact(storage)} (run it first)")
    study = _create_or_load(spec, storage, create)
    if [d.name.lower() for d in study.directions] != spec.directions:
        found = [d.name.lower() for d in study.directions]
        raise SpecError(
            spec.path, "study.name", spec.study.name, f"a study with directions {spec.directions}, not {found}"
        )
    if create:
        new_data = _data_to_record(study, spec, data, accept_data_change)  # refused before any write
        with storage_lock(storage, spec.study.name):  # one identity and spec, however many runs start at once
            study_uid(study)
            _keep_spec(study, spec, spec_changed)
        if study.metric_names is None:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, and what plots and callbacks read
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(spec.metric_names)
        _record_builders(study, spec, builders or {}, accept_builder_change)
        if new_data:
            study.set_user_attr(DATA_DIGEST_ATTR, data.digest if data is not None else None)
    return study


def _create_or_load(spec: StudySpec, storage: str, create: bool) -> optuna.Study:
    """The spec's study in ``storage`` with its sampler, created if ``create`` and missing; the
    errors of :func:`open_study` for a storage that cannot be used or a study that is not there."""
    import optuna
    import sqlalchemy.exc

    try:
        rdb = make_storage(spec, storage)
        if create:
            return optuna.create_study(
                study_name=spec.study.name,
                storage=rdb,
                directions=[optuna.study.StudyDirection[d.upper()] for d in spec.directions],
                sampler=make_sampler(spec),
                load_if_exists=True,
            )
        return optuna.load_study(study_name=spec.study.name, storage=rdb, sampler=make_sampler(spec))
    except KeyError:
        raise SpecError(
            spec.path, "study.name", spec.study.name, f"a study in {redact(storage)} (run it first)"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ParameterError(
            "open_study", "storage", redact(storage), f"a reachable Optuna storage ({message})"
        ) from None


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


def _data_to_record(study: optuna.Study, spec: StudySpec, data: Dataset | None, accept_change: bool) -> bool:
    """Whether the digest of ``data`` is to be kept in the study (its first, or an accepted
    change); refuse data other than the study's unless ``accept_change``. A user's arrays
    (no source) are not checked."""
    if data is None or data.source is None:
        return False
    recorded = study.user_attrs.get(DATA_DIGEST_ATTR)
    change = data_change(spec, recorded, data.digest)
    if change is not None and not accept_change:
        raise data_changed(spec, change, study.study_name)
    if change is not None:
        _logger.warning("study %r resumes with its data changed (%s)", spec.study.name, change)
    return recorded != data.digest


def _settled(spec: StudySpec) -> dict[str, Any]:
    document = json.loads(json.dumps(spec.to_dict()))
    for key in ("n_trials", "timeout"):
        document["study"].pop(key, None)
    return document


def _keep_spec(study: optuna.Study, spec: StudySpec, spec_changed: bool) -> None:
    """Store ``spec`` in a new study; refuse a different one for an existing study unless
    ``spec_changed`` (editing the file mid-run must not change the study silently)."""
    stored, settled = study.user_attrs.get(SPEC), _settled(spec)
    if stored is not None:  # a key added to the spec since takes its default, as in a worker
        stored = _settled(StudySpec.from_dict(stored, path=spec.path))
    if stored == settled:
        return
    if stored is not None and not spec_changed:
        changed = [
            f"{section}.{key}"
            for section, table in settled.items()
            for key in sorted(set(table) | set(stored.get(section, {})))
            if table.get(key) != stored.get(section, {}).get(key)
        ]
        section, _, key = changed[0].partition(".")
        raise SpecError(spec.path, changed[0], settled[section].get(key),
                        f"the spec study {study.study_name!r} was created with ({', '.join(changed)} changed since); "
                        "run with --spec-changed to go on under this one, or give the study another name")  # fmt: skip
    if stored is not None:
        _logger.warning("study %r goes on under a changed spec (%s)", study.study_name, spec.path)
    study.set_user_attr(SPEC, settled)


def stored_spec(path: str | Path, study_name: str, storage: str) -> StudySpec:
    """The spec study ``study_name`` in ``storage`` runs under (kept in it by :func:`open_study`),
    its relative paths (data files, builder modules) taken from the folder of ``path``, its file:
    what a worker process runs, whatever the file says by the time it starts.

    Raises:
        SpecError: the study does not exist or holds no spec.
    """
    rdb = open_storage(storage)
    try:
        document = rdb.get_study_user_attrs(rdb.get_study_id_from_name(study_name)).get(SPEC)
    except KeyError:
        document = None
    finally:
        rdb.engine.dispose()
    if document is None:
        raise SpecError(path, "study.name", study_name, f"a study of {redact(storage)} that holds its spec")
    return StudySpec.from_dict(document, path=path)


def make_callback(
    spec: StudySpec,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    builders: Mapping[str, Mapping[str, str]] | None = None,
    custom_objects: Mapping[str, type] | None = None,
) -> MLflowParetoCallback:
    """The MLflow callback for the spec's study, with the spec logged on the parent run, the
    user builders' targets, source paths and hashes as its tags ``builder.NAME.target``, …, and
    their Keras classes (``custom_objects``) to load their models with."""
    prepare_local_state(tracking_uri)
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
        custom_objects=custom_objects,
    )


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
    Every trial is logged to MLflow as it ends. With ``finish`` (the default), the Pareto set is
    then re-timed side by side and the MLflow record completed (``pareto.csv``, plots), also
    after Ctrl-C.

    ``build`` searches your own builder(s) instead of the spec's families (see
    :class:`TradeoffObjective`); each is built once before the study opens (see
    :meth:`TradeoffObjective.check_builders`). A study whose builder source file changed
    resumes only with ``accept_builder_change``, one whose data file (or image folder) changed
    only with ``accept_data_change``.

    Raises:
        ParameterError: ``workers`` is not an int >= 0.
        ValueError: with worker processes, which run under the spec stored in the study
            (``spec``, or the one it was created with), load the data from its source and
            the builders the spec names, ``data`` holds arrays of your own or ``build`` is
            not what the spec names (pass those with ``workers=0``).
        SpecError: a store cannot be used, the data source is bad, a builder breaks the
            contract, or its source or the data changed since the study began, or ``spec`` is not the one
            the study was created with (and not ``spec_changed``).
        RunError: the spec's latency server does not answer.
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
    stop = _device_stop(spec, study)
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
                _finish_record(study, objective, callback)
            except Exception as cleanup:  # the first failure is the one to report
                _logger.warning("after %s, the MLflow record was not completed (%s: %s); run sync",
                                type(error).__name__, type(cleanup).__name__, excerpt(str(cleanup), 200))  # fmt: skip
        raise
    progress.close()
    if finish:
        _finish_record(study, objective, callback)
    if stop is not None and stop():
        raise DeviceUnreachable(
            f"latency server {spec.latency.device}: the last {MAX_DEVICE_FAILURES} trials failed because it did not "
            "answer, so the study stopped; run the same command again once it is back to resume"
        )
    return study


def _device_stop(spec: StudySpec, study: optuna.Study) -> Callable[[], bool] | None:
    """With a latency server: whether the trials started from now on lost it (see
    :func:`device_lost`); else None."""
    if spec.latency.device == LOCAL:
        return None
    since = max((t.number for t in study.get_trials(deepcopy=False)), default=-1) + 1
    return functools.partial(device_lost, study, since)


def device_lost(study: optuna.Study, since: int = 0) -> bool:
    """Whether the last :data:`MAX_DEVICE_FAILURES` trials to finish (of those numbered ``since``
    or later) all failed because the latency server did not answer."""
    import optuna

    state = optuna.trial.TrialState
    finished = [t for t in study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.FAIL))
                if t.number >= since and t.datetime_complete is not None]  # fmt: skip
    last = sorted(finished, key=lambda t: t.datetime_complete)[-MAX_DEVICE_FAILURES:]  # type: ignore[arg-type, return-value]
    return len(last) == MAX_DEVICE_FAILURES and all(DEVICE_FAILURE in t.user_attrs for t in last)


def _finish_record(study: optuna.Study, objective: TradeoffObjective, callback: MLflowParetoCallback) -> None:
    """Re-time the front side by side, then complete the MLflow record and check it (see
    :func:`sync_record`)."""
    if finished_count(study):
        _retime_unless_lost(study, objective)
    sync_record(study, callback, objective.spec)


def sync_record(study: optuna.Study, callback: MLflowParetoCallback, spec: StudySpec) -> SyncReport:
    """Complete the study's MLflow record (:meth:`MLflowParetoCallback.sync`: trials a crashed
    worker left unrecorded logged, half-written runs logged again) and check it; runs that
    other commands' workers are still writing are waited for, ``_WRITERS_WAIT_SECONDS`` at most.

    Raises:
        RecordIncomplete: what is still missing, and the ``sync`` command that completes it.
    """
    deadline = time.monotonic() + _WRITERS_WAIT_SECONDS
    while True:
        report = callback.sync(study)
        missing = callback.missing(study)
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        writing = report.pending or any(may_be_writing(trials[n]) for numbers in missing.values() for n in numbers)
        if not missing or not writing or time.monotonic() > deadline:
            break
        time.sleep(2)
    if missing:
        lacking = "; ".join(what + (f" (trials {_numbers(numbers)})" if numbers else "")
                            for what, numbers in missing.items())  # fmt: skip
        raise RecordIncomplete(f"the MLflow record of study {study.study_name!r} is incomplete: {lacking}; "
                               f"complete it with: python -m tradeoff_search sync {spec.path}")  # fmt: skip
    return report


def sync_study(spec: StudySpec, study: optuna.Study, tracking_uri: str = DEFAULT_TRACKING_URI) -> SyncReport:
    """``sync``: complete the MLflow record of the spec's ``study`` (see :func:`sync_record`), its
    models loaded with the Keras classes of the builders the spec names."""
    callback = make_callback(spec, tracking_uri, custom_objects=keras_classes(spec_builders(spec).values()))
    return sync_record(study, callback, spec)


_WRITERS_WAIT_SECONDS = 60.0  # another command's worker logs a finished trial in seconds


def _numbers(numbers: Sequence[int], shown: int = 8) -> str:
    more = f", … ({len(numbers)} in all)" if len(numbers) > shown else ""
    return ", ".join(map(str, numbers[:shown])) + more


def _retime_unless_lost(study: optuna.Study, objective: TradeoffObjective) -> None:
    try:
        retime_front(study, objective)
    except DeviceError as error:  # the trials keep their own timings
        _logger.warning("the front was not re-timed: %s", error)


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
    device_lost = _device_stop(spec, study)

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
    if data.preprocessing is not None:  # what a deployment applies to raw rows (select ships it)
        study.set_user_attr(PREPROCESSING_ATTR, data.preprocessing)
    callback = make_callback(objective.spec, tracking_uri, records, keras_classes(objective.builders.values()))
    if device:
        _logger.info("timing on %s: %s", spec.latency.device, ", ".join(str(v) for v in device.values()))
    objective.calibrate(study)  # once, before any worker times a trial
    return study, objective, callback


def check_device(spec: StudySpec) -> dict[str, Any]:
    """The fingerprint of the spec's latency server (empty for ``local``); a ``RunError``
    naming ``latency.device`` unless it answers (with the token of
    ``TRADEOFF_SEARCH_DEVICE_TOKEN`` if it needs one)."""
    if spec.latency.device == LOCAL:
        return {}
    try:
        return DeviceBackend(spec.latency.device).fingerprint()
    except DeviceError as error:
        raise RunError(spec.path, "latency.device", spec.latency.device,
                       f"a latency server that answers ({error})") from None  # fmt: skip
