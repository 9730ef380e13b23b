"""Trial tickets: a study holds at most ``n_trials`` trials, however many workers share it.

Why tickets: Optuna's ``n_trials`` counts per ``optimize`` call and ``MaxTrialsCallback`` checks
after a trial, so workers started together overshoot. Here the study holds at most
``n_trials`` live slots (queued, running or finished trials); each run queues tickets (see
:class:`Tickets`) under a lock that every worker of the storage shares, and workers run only
trials they claim from the queue (see ``_loop``). A failed trial frees its slot for the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tradeoff_search.record._keys import VARIANT_OF
from tradeoff_search.stores import storage_lock

if TYPE_CHECKING:
    import optuna


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


def trainings(study: optuna.Study, states: Sequence[Any]) -> list[optuna.trial.FrozenTrial]:
    """The trials in ``states`` that the sampler proposed, not the variants of a trained model
    added beside them (see ``tradeoff_search.trial._variants``): what ``n_trials`` counts."""
    return [trial for trial in study.get_trials(deepcopy=False, states=states) if VARIANT_OF not in trial.user_attrs]


def finished_count(study: optuna.Study) -> int:
    import optuna

    return len(trainings(study, (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))
