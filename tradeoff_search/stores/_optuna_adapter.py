"""Optuna's internals, in one place: what the trial loop, the pool and the variants need of Optuna
beyond its public API.

Claiming a queued trial without creating one when the queue is empty, a trial's heartbeats, a
system attribute on a running trial, failing a trial now and re-queuing it as a stale heartbeat
would, and adding a finished trial and learning its number: Optuna offers each only through
private names (``Study._pop_waiting_trial_id``, ``optuna.storages._heartbeat``,
``Study._storage``, ``Study._study_id``, ``Trial._trial_id``). Every use of them is here, under
the ``optuna>=5,<6`` pin, and ``tests/test_optuna_adapter.py`` pins the behaviour each function
relies on against a real storage: an Optuna release that changes one fails there, in one place.
No other module of the package touches an Optuna private (``tests/test_architecture.py``).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tradeoff_search.record._keys import FAIL_REASON

if TYPE_CHECKING:
    import optuna


def claim_waiting_trial(study: optuna.Study) -> optuna.Trial | None:
    """A WAITING trial of ``study``, now RUNNING and the caller's; None when none is waiting.

    ``Study.ask`` would create a new trial when the queue is empty; this is its queue-popping step
    alone. It reads WAITING, then writes RUNNING, relying on ``SELECT … FOR UPDATE``, which SQLite
    ignores: on SQLite, claim under a lock every worker of the storage shares.
    """
    import optuna

    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


def heartbeats_enabled(study: optuna.Study) -> bool:
    """Whether ``study``'s storage records heartbeats (an RDB storage opened with an interval)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial) -> Iterator[None]:
    """``trial``'s heartbeats, recorded by a thread while the block runs (when its storage has
    them on): a trial whose heartbeats stop is found stale by :func:`fail_stale_trials`."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    with get_heartbeat_thread(trial._trial_id, trial.study._storage):
        yield


def set_trial_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    """Set a system attribute of the running ``trial`` (``Trial`` sets only user attributes)."""
    trial.study._storage.set_trial_system_attr(trial._trial_id, key, value)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials of ``study`` whose heartbeats stopped, and re-queue them with their
    parameters (the storage's stale-trial callback, see ``stores._storage.open_storage``); nothing
    without heartbeats."""
    import optuna

    if not heartbeats_enabled(study):
        return
    with warnings.catch_warnings():  # experimental since Optuna 2.9, and what crash safety needs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_and_requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str, retry: bool = True) -> bool:
    """Fail the running ``trial`` now with ``reason`` (its user attribute ``FAIL_REASON``) and,
    with ``retry``, re-queue it as a stale heartbeat would (the storage's stale-trial callback:
    the same parameters, at most as many retries), without the reason; False when it had
    finished already, or another process failed it first.

    What :func:`fail_stale_trials` does, but for a trial known lost at once (its worker process
    ended) instead of two heartbeats later.
    """
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat

    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
        if not storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:  # it finished, or another process failed it
        return False
    requeue = storage.get_heartbeat_stale_trial_callback() if retry and isinstance(storage, BaseHeartbeat) else None
    if requeue is not None:
        failed = copy.deepcopy(storage.get_trial(trial._trial_id))
        failed.user_attrs = {k: v for k, v in failed.user_attrs.items() if k != FAIL_REASON}  # not the retry's
        requeue(study, failed)
    return True


def add_trial_from_template(study: optuna.Study, template: optuna.trial.FrozenTrial) -> int:
    """Add ``template`` (see ``optuna.trial.create_trial``) to ``study`` as a trial, its system
    attributes kept, as ``Study.add_trial`` does; returns its number, which ``add_trial`` does not."""
    storage = study._storage
    return storage.get_trial_number_from_id(storage.create_new_trial(study._study_id, template_trial=template))
