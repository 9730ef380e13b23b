"""Opening a study: created with its sampler on first use, resumed under the spec, builders and
data it began with (a change refused unless accepted); the spec a worker process runs under."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.data._dataset import Dataset, data_change, data_changed
from tradeoff_search.record._keys import BUILDERS_ATTR, DATA_DIGEST_ATTR, SPEC
from tradeoff_search.rules import SpecError
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.spec._validation import ParameterError
from tradeoff_search.stores import (
    DEFAULT_STORAGE,
    has_optuna_tables,
    make_storage,
    open_storage,
    prepare_local_state,
    redact,
    sqlite_path,
    storage_lock,
)
from tradeoff_search.tracking._run_index import study_uid

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)


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
