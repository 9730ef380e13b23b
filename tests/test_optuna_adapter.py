"""What ``stores._optuna_adapter`` relies on in Optuna, pinned on a real storage (a SQLite file,
an RDB storage with heartbeats as the study opens it): an Optuna release that changes one of
these fails here, naming the adapter's function and what changed, before it breaks a study."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tradeoff_search.record._keys import FAIL_REASON
from tradeoff_search.stores import open_storage
from tradeoff_search.stores._optuna_adapter import (
    add_trial_from_template,
    claim_waiting_trial,
    fail_and_requeue,
    fail_stale_trials,
    heartbeat,
    heartbeats_enabled,
    set_trial_system_attr,
)

X = optuna.distributions.FloatDistribution(0, 1)


def changed(function: str, what: str) -> str:
    """The one message of this file: which adapter function, and what Optuna no longer does."""
    return f"Optuna {optuna.__version__} changed what stores/_optuna_adapter.py:{function} relies on: {what}"


def study_in(tmp_path: Path, heartbeat_seconds: int | None = None) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_seconds)
    return optuna.create_study(study_name="adapter", storage=storage, directions=["maximize", "minimize"])


def test_the_private_names_it_uses_exist(tmp_path: Path) -> None:
    heartbeats = importlib.import_module("optuna.storages._heartbeat")
    for name in ("get_heartbeat_thread", "is_heartbeat_enabled", "BaseHeartbeat"):
        assert hasattr(heartbeats, name), changed("heartbeat", f"optuna.storages._heartbeat.{name} is gone")
    study = study_in(tmp_path)
    for name in ("_pop_waiting_trial_id", "_storage", "_study_id"):
        assert hasattr(study, name), changed("claim_waiting_trial", f"Study.{name} is gone")
    trial = study.ask()
    assert hasattr(trial, "_trial_id") and trial.study is study, changed("heartbeat", "Trial._trial_id is gone")


def test_claim_waiting_trial_pops_the_queue_in_order_and_never_creates_a_trial(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    study.enqueue_trial({"x": 0.25})
    study.enqueue_trial({"x": 0.75})
    first, second = claim_waiting_trial(study), claim_waiting_trial(study)
    assert first is not None and second is not None, changed("claim_waiting_trial", "a WAITING trial is not popped")
    assert (first.number, second.number) == (0, 1), changed("claim_waiting_trial", "the queue is not in order")
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.RUNNING] * 2, changed("claim_waiting_trial", "a popped trial is not RUNNING")
    assert first.suggest_float("x", 0, 1) == 0.25, changed("claim_waiting_trial", "the enqueued parameters are lost")
    assert claim_waiting_trial(study) is None, changed("claim_waiting_trial", "an empty queue gives a trial")
    assert len(study.get_trials()) == 2, changed("claim_waiting_trial", "an empty queue creates a trial")


def test_a_trial_with_heartbeats_stays_running_and_one_without_is_failed_and_requeued(tmp_path: Path) -> None:
    study = study_in(tmp_path, heartbeat_seconds=1)  # stale after 2 s of silence
    assert heartbeats_enabled(study), changed("heartbeats_enabled", "an RDB storage with an interval has none")
    (tmp_path / "plain").mkdir()
    assert not heartbeats_enabled(study_in(tmp_path / "plain")), changed("heartbeats_enabled", "always on")
    study.enqueue_trial({"x": 0.5})
    trial = claim_waiting_trial(study)
    assert trial is not None
    trial.suggest_float("x", 0, 1)
    with heartbeat(trial):
        time.sleep(3.5)
        fail_stale_trials(study)
        assert study.trials[0].state == TrialState.RUNNING, changed("heartbeat", "a beating trial was found stale")
    time.sleep(3.5)  # SQLite's clock has whole seconds: more than 2 s since the last beat
    fail_stale_trials(study)
    stale, retry = study.trials
    assert stale.state == TrialState.FAIL, changed("fail_stale_trials", "a silent trial is not failed")
    assert retry.state == TrialState.WAITING and retry.params == {"x": 0.5}, changed(
        "fail_stale_trials", "a stale trial is not re-queued with its parameters"
    )
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0


@pytest.mark.parametrize("retry", [True, False])
def test_fail_and_requeue_fails_now_and_requeues_without_the_reason(tmp_path: Path, retry: bool) -> None:
    study = study_in(tmp_path, heartbeat_seconds=60)
    study.enqueue_trial({"x": 0.5}, user_attrs={"kept": 1})
    trial = claim_waiting_trial(study)
    assert trial is not None
    trial.suggest_float("x", 0, 1)
    set_trial_system_attr(trial, "tradeoff_search:worker", "host:1")
    frozen = study.trials[0]
    assert frozen.system_attrs["tradeoff_search:worker"] == "host:1", changed("set_trial_system_attr", "not kept")

    assert fail_and_requeue(study, frozen, "its worker ended", retry=retry)
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL and failed.user_attrs[FAIL_REASON] == "its worker ended", changed(
        "fail_and_requeue", "the trial is not failed with its reason"
    )
    queued = study.trials[1:]
    assert len(queued) == int(retry), changed("fail_and_requeue", "the stale-trial callback re-queues otherwise")
    if retry:
        assert queued[0].state == TrialState.WAITING and queued[0].params == {"x": 0.5}
        assert queued[0].user_attrs == {"kept": 1}, changed("fail_and_requeue", "the retry's user attributes differ")
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(queued[0]) == 0
    assert not fail_and_requeue(study, failed, "again"), changed("fail_and_requeue", "a finished trial fails again")
    assert len(study.trials) == 1 + int(retry)


def test_fail_and_requeue_without_heartbeats_fails_without_a_retry(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    study.enqueue_trial({"x": 0.5})
    assert claim_waiting_trial(study) is not None
    assert fail_and_requeue(study, study.trials[0], "gone")
    assert [t.state for t in study.trials] == [TrialState.FAIL], changed("fail_and_requeue", "re-queued anyway")


def test_add_trial_from_template_returns_its_number_and_keeps_what_it_holds(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    study.enqueue_trial({"x": 0.5})
    template = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=[0.9, 1.5],
        params={"x": 0.5},
        distributions={"x": X},
        user_attrs={"variant_of": 0},
        constraints={"latency_ms_over_budget": -1.0},
        system_attrs={"tradeoff_search:worker": "host:1"},
    )
    number = add_trial_from_template(study, template)
    assert number == 1, changed("add_trial_from_template", "the new trial's number is not returned")
    added = study.trials[number]
    assert (added.state, added.values, added.params) == (TrialState.COMPLETE, [0.9, 1.5], {"x": 0.5})
    assert added.user_attrs == {"variant_of": 0} and added.system_attrs["tradeoff_search:worker"] == "host:1", changed(
        "add_trial_from_template", "the template's attributes are not kept"
    )
    assert added.constraints == {"latency_ms_over_budget": -1.0}, changed("add_trial_from_template", "constraints")
