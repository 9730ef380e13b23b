"""Training and evaluation: optimizer, learning-rate schedule, early stopping, per-epoch curves."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tradeoff_search._data import Dataset
from tradeoff_search._lock import machine_lock
from tradeoff_search._space import Candidate
from tradeoff_search._spec import TrainingSection

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_EVAL_BATCH_SIZE = 1024


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainingResult:
    """What training did: per-epoch curves ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``.

    Train curves are prefixed so that they never shadow the objective's own ``accuracy``.
    """

    history: dict[str, list[float]]
    seconds: float

    @property
    def epochs(self) -> int:
        return len(self.history.get("train_loss", []))


def make_optimizer(candidate: Candidate, steps_per_epoch: int, max_epochs: int) -> keras.optimizers.Optimizer:
    """The candidate's optimizer with its learning-rate schedule over the whole epoch budget.

    ``cosine`` decays to 0 and ``exponential`` to a tenth of the initial rate by the last epoch.
    """
    import keras

    total_steps = max(1, steps_per_epoch * max_epochs)
    schedules = keras.optimizers.schedules
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = candidate.learning_rate
    if candidate.schedule == "cosine":
        learning_rate = schedules.CosineDecay(candidate.learning_rate, decay_steps=total_steps)
    elif candidate.schedule == "exponential":
        learning_rate = schedules.ExponentialDecay(candidate.learning_rate, decay_steps=total_steps, decay_rate=0.1)
    optimizers = keras.optimizers
    if candidate.optimizer == "adam":
        return optimizers.Adam(learning_rate)
    if candidate.optimizer == "adamw":
        return optimizers.AdamW(learning_rate, weight_decay=candidate.weight_decay)
    if candidate.optimizer == "sgd":
        return optimizers.SGD(learning_rate, momentum=candidate.momentum, nesterov=candidate.nesterov)
    if candidate.optimizer == "rmsprop":
        return optimizers.RMSprop(learning_rate, momentum=candidate.momentum)
    if candidate.optimizer == "nadam":
        return optimizers.Nadam(learning_rate)
    raise ValueError(f"optimizer={candidate.optimizer!r}: unknown")


def train(
    model: keras.Model,
    candidate: Candidate,
    data: Dataset,
    training: TrainingSection,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainingResult:
    """Fit on the train split with early stopping on validation loss (best weights restored)."""
    import keras

    steps_per_epoch = math.ceil(len(data.y_train) / candidate.batch_size)
    train_batches, val_batches = _pipelines(data, candidate.batch_size)
    binary = data.n_classes == 2
    model.compile(
        optimizer=make_optimizer(candidate, steps_per_epoch, training.max_epochs),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # One compiled call per epoch: on small models Keras' per-step dispatch is the cost.
        steps_per_execution=steps_per_epoch,
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=training.patience, restore_best_weights=True
    )
    start = time.perf_counter()
    with machine_lock(shared=True):  # latency is never measured on this machine meanwhile
        fitted = model.fit(
            train_batches,
            steps_per_epoch=steps_per_epoch,
            validation_data=val_batches,
            epochs=training.max_epochs,
            shuffle=False,  # the stream reshuffles itself every epoch
            class_weight=data.class_weight,
            callbacks=[keras.callbacks.TerminateOnNaN(), early_stopping, *(callbacks or [])],
            verbose=0,
        )
    seconds = time.perf_counter() - start
    history = {
        (key if key.startswith("val_") else f"train_{key}"): [float(v) for v in values]
        for key, values in fitted.history.items()
    }
    losses = history.get("train_loss", [])
    if not losses or not all(map(math.isfinite, losses)):
        raise TrainingDivergedError(
            f"training diverged: loss {losses[-1] if losses else 'missing'} at epoch {len(losses)}"
        )
    return TrainingResult(history=history, seconds=seconds)


def _pipelines(data: Dataset, batch_size: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The train split as one endless, reshuffled-per-epoch stream of batches, and the validation
    split as cached batches.

    Why not NumPy arrays into ``fit``: Keras then builds a new input pipeline every epoch, which
    costs more than a small model's epoch of arithmetic (measured in ``benchmarks/trial_speed.py``).
    """
    import tensorflow as tf

    train_batches = (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(len(data.y_train), reshuffle_each_iteration=True)
        .batch(batch_size)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    val_batches = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(_EVAL_BATCH_SIZE).cache()
    return train_batches, val_batches


def predict_classes(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Class indices for ``x`` (one sigmoid unit means two classes)."""
    probabilities = np.concatenate(
        [np.asarray(model(x[i : i + _EVAL_BATCH_SIZE], training=False)) for i in range(0, len(x), _EVAL_BATCH_SIZE)]
    )
    if probabilities.shape[-1] == 1:
        return (probabilities[:, 0] > 0.5).astype(np.int64)
    return probabilities.argmax(axis=-1)


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``accuracy`` or ``balanced_accuracy`` (scikit-learn's definitions)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    scorer = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score}[metric]
    return float(scorer(y_true, y_pred))
