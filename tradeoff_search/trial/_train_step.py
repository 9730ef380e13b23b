"""A trial's training step: train its model, stopped early when a rival dominates it, and
score the float model on the validation split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tradeoff_search.data._dataset import Dataset
from tradeoff_search.record._keys import EPOCHS, HISTORY, PRUNE_REASON, TRAIN_SECONDS, TRAINED
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.trial._build import Built
from tradeoff_search.trial._pruning import ParetoPruning, rivals
from tradeoff_search.trial._timing import TimedModes
from tradeoff_search.trial._training import predict_classes, score, train

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Trained:
    """A trained model's validation accuracy as a float Keras model, and how many epochs it trained."""

    accuracy_float: float
    epochs: int


def train_candidate(trial: optuna.Trial, built: Built, data: Dataset, spec: StudySpec, timed: TimedModes) -> Trained:
    """Train ``built``'s model with its recipe; records ``trained``, ``train_seconds``, ``epochs``
    and ``history``.

    Raises:
        optuna.TrialPruned: a rival dominates the model in every mode (at the best of each
            objective over ``timed``'s modes) and was ahead by the same epoch.
    """
    import optuna

    training = spec.training
    pruning = ParetoPruning(timed.best(), rivals(trial.study), training.pruning_margin) if training.pruning else None
    result = train(built.model, built.recipe, data, training, on_epoch_end=pruning)
    trial.set_user_attr(TRAINED, True)
    trial.set_user_attr(TRAIN_SECONDS, result.seconds)
    trial.set_user_attr(EPOCHS, result.epochs)
    trial.set_user_attr(HISTORY, result.history)
    if pruning is not None and pruning.reason is not None:
        trial.set_user_attr(PRUNE_REASON, pruning.reason)  # for studies run by optimize() too
        raise optuna.TrialPruned(pruning.reason)
    accuracy_float = score(spec.objectives.accuracy, data.y_val, predict_classes(built.model, data.x_val))
    return Trained(accuracy_float, result.epochs)
