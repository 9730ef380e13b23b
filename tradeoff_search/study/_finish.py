"""Finishing a study's record: the front re-timed side by side, then the MLflow record completed
(``sync``) and checked, waiting for runs other commands' workers are still writing."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tradeoff_search.cost._device_client import DeviceError
from tradeoff_search.space._builders import keras_classes, spec_builders
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.stores import DEFAULT_TRACKING_URI, prepare_local_state
from tradeoff_search.study._retime import retime_front
from tradeoff_search.study._tickets import finished_count
from tradeoff_search.tracking._callback import MLflowParetoCallback
from tradeoff_search.tracking._repair import RecordIncomplete, SyncReport, may_be_writing
from tradeoff_search.trial._objective import TradeoffObjective
from tradeoff_search.trial._staging import staging_dir

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)


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


def finish_record(study: optuna.Study, objective: TradeoffObjective, callback: MLflowParetoCallback) -> None:
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
