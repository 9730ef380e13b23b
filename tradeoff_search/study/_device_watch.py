"""Watching the latency server of a study: whether it answers before the study starts, and
whether the last trials lost it (the study then stops, resumable)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tradeoff_search.cost._device_client import DeviceBackend, DeviceError
from tradeoff_search.cost._harness import LOCAL
from tradeoff_search.record._keys import DEVICE_FAILURE
from tradeoff_search.rules import RunError
from tradeoff_search.spec._spec import StudySpec

if TYPE_CHECKING:
    import optuna

MAX_DEVICE_FAILURES = 3  # trials in a row that lost the latency server: the study stops (resumable)


def device_stop(spec: StudySpec, study: optuna.Study) -> Callable[[], bool] | None:
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
