"""Multi-objective early stopping: stop a trial whose curve is already dominated.

Optuna 5 refuses ``trial.report`` in multi-objective studies, so its pruners cannot help. But in
this search every objective except accuracy (latency, and parameters, MACs or size when they are
objectives) is known before training; only accuracy evolves. So at rungs (epochs 2, 4, 8, 16, …,
as in successive halving), a trial is stopped when a finished trial was at least as good on every
known objective and had reached, by the same epoch, a validation accuracy higher by a margin:
it cannot end on the front unless it catches up a rival that was ahead at the same point.

Accuracy "by epoch e" is the best validation accuracy of epochs 1..e, for the trial and its
rivals alike (a rival that stopped early keeps its best). The fastest candidates have no rival
and are never stopped, so the cheap end of the front is never cut.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tradeoff_search.record._keys import HISTORY, VAL_ACCURACY

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)

FIRST_RUNG = 2


def is_rung(epoch: int) -> bool:
    """Whether the pruning rule is checked after ``epoch`` (1-based): 2, 4, 8, 16, …"""
    return epoch >= FIRST_RUNG and epoch & (epoch - 1) == 0


@dataclass(frozen=True)
class Rival:
    """A finished trial as the pruning rule sees it: its values known before training, and its
    best validation accuracy by each epoch."""

    number: int
    known: tuple[float, ...]
    best_accuracy: np.ndarray

    def accuracy_by(self, epoch: int) -> float:
        return float(self.best_accuracy[min(epoch, len(self.best_accuracy)) - 1])


def rivals(study: optuna.Study) -> list[Rival]:
    """The study's finished, trained, feasible trials with a validation curve."""
    import optuna

    found = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        curve = (trial.user_attrs.get(HISTORY) or {}).get(VAL_ACCURACY)
        if curve and all(v <= 0 for v in trial.constraints.values()):
            found.append(Rival(trial.number, tuple(trial.values[1:]), np.maximum.accumulate(curve)))
    return found


def dominating_rival(
    known: tuple[float, ...], best_accuracy: float, epoch: int, candidates: list[Rival], margin: float
) -> Rival | None:
    """The first rival no worse on every known (minimized) objective whose accuracy by ``epoch``
    beat ``best_accuracy`` by more than ``margin``; None if there is none."""
    for rival in candidates:
        no_worse = all(r <= k for r, k in zip(rival.known, known, strict=True))
        if no_worse and rival.accuracy_by(epoch) > best_accuracy + margin:
            return rival
    return None


class ParetoPruning:
    """The rule as an ``on_epoch_end`` hook of :func:`~tradeoff_search.trial._training.train`: it stops
    training at a rung where a rival dominates, and then holds the reason in :attr:`reason`."""

    def __init__(self, known: tuple[float, ...], candidates: list[Rival], margin: float) -> None:
        self.known = known
        self.candidates = candidates
        self.margin = margin
        self.reason: str | None = None
        self._best = 0.0

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        self._best = max(self._best, logs["val_accuracy"])
        if not is_rung(epoch):
            return False
        rival = dominating_rival(self.known, self._best, epoch, self.candidates, self.margin)
        if rival is not None:
            self.reason = (
                f"epoch {epoch}: best validation accuracy {self._best:.4f}, more than {self.margin} below "
                f"trial {rival.number}'s {rival.accuracy_by(epoch):.4f} by that epoch, which is no slower"
            )
        return self.reason is not None
