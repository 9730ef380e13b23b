"""Training and evaluation: optimizer, learning-rate schedule, early stopping, per-epoch curves."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tradeoff_search.cost._convert import tflite_outputs
from tradeoff_search.cost._lock import machine_lock
from tradeoff_search.data._dataset import Dataset
from tradeoff_search.record._keys import CURVES
from tradeoff_search.space._space import Recipe
from tradeoff_search.spec._sections import TrainingSection

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_EVAL_BATCH_SIZE = 1024

EpochHook = Callable[[int, dict[str, float]], bool]


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


def make_optimizer(recipe: Recipe, steps_per_epoch: int, max_epochs: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer with its learning-rate schedule over the whole epoch budget.

    ``cosine`` decays to 0 and ``exponential`` to a tenth of the initial rate by the last epoch.
    """
    import keras

    total_steps = max(1, steps_per_epoch * max_epochs)
    schedules = keras.optimizers.schedules
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = recipe.learning_rate
    if recipe.schedule == "cosine":
        learning_rate = schedules.CosineDecay(recipe.learning_rate, decay_steps=total_steps)
    elif recipe.schedule == "exponential":
        learning_rate = schedules.ExponentialDecay(recipe.learning_rate, decay_steps=total_steps, decay_rate=0.1)
    optimizers = keras.optimizers
    if recipe.optimizer == "adam":
        return optimizers.Adam(learning_rate)
    if recipe.optimizer == "adamw":
        return optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return optimizers.SGD(learning_rate, momentum=recipe.momentum, nesterov=recipe.nesterov)
    if recipe.optimizer == "rmsprop":
        return optimizers.RMSprop(learning_rate, momentum=recipe.momentum)
    if recipe.optimizer == "nadam":
        return optimizers.Nadam(learning_rate)
    raise ValueError(f"optimizer={recipe.optimizer!r}: unknown")


def train(
    model: keras.Model,
    recipe: Recipe,
    data: Dataset,
    training: TrainingSection,
    on_epoch_end: EpochHook | None = None,
) -> TrainingResult:
    """Fit on the train split with early stopping on validation loss (best weights restored).

    The loop is the one Keras documents for training from scratch (``GradientTape`` and
    ``optimizer.apply``), one compiled call per epoch. ``model.fit`` computes the same, but for
    the small models searched here it spends ~0.8 s per model building its training and
    validation graphs, more than 20 epochs of a 17k-parameter MLP take to run
    (``benchmarks/trial_speed.py``).

    Args:
        on_epoch_end: called after every epoch with its number (from 1) and its curves' values
            (``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``); training stops
            when it returns True.
    """
    import keras

    steps_per_epoch = math.ceil(len(data.y_train) / recipe.batch_size)
    optimizer = make_optimizer(recipe, steps_per_epoch, training.max_epochs)
    binary = data.n_classes == 2
    loss = keras.losses.BinaryCrossentropy() if binary else keras.losses.SparseCategoricalCrossentropy()
    run_epoch = _epoch_function(model, optimizer, loss, data, recipe.batch_size)
    evaluate = _evaluation_function(model, loss, data.input_shape)
    history: dict[str, list[float]] = {name: [] for name in CURVES}
    best_loss, best_weights, waited = math.inf, None, 0
    start = time.perf_counter()
    with machine_lock(shared=True), _released_custom_gradients():  # the lock: no latency is timed meanwhile
        for epoch in range(1, training.max_epochs + 1):
            train_loss, train_accuracy = (float(value) for value in run_epoch())
            if not math.isfinite(train_loss):
                raise TrainingDivergedError(f"training diverged: loss {train_loss} at epoch {epoch}")
            logs = dict(zip(CURVES, (train_loss, train_accuracy, *evaluate(data.x_val, data.y_val)), strict=True))
            for name, value in logs.items():
                history[name].append(value)
            waited += 1  # early stopping as keras.callbacks.EarlyStopping does it
            if logs["val_loss"] < best_loss:
                best_loss, best_weights, waited = logs["val_loss"], model.get_weights(), 0
            if (on_epoch_end is not None and on_epoch_end(epoch, logs)) or waited >= training.patience:
                break
        if best_weights is not None:
            model.set_weights(best_weights)
    return TrainingResult(history=history, seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _released_custom_gradients() -> Iterator[None]:
    """Drop the gradient functions TensorFlow registers while the epoch function is traced.

    Keras' optimizer all-reduces gradients through ``tf.custom_gradient``, which in graph mode
    registers one gradient function per trace in a process-wide registry and never removes it.
    Its closure holds the traced graph (TensorFlow issue 97697), so every trained model leaked
    its training graph, and the full collection of each trial's ``clear_session`` grew slower
    (1 → 130 ms over 40 MNIST-1D trials). The functions serve only that graph's gradients, which
    are built while it is traced; this keeps the registry as it was before.
    """
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):  # private in TensorFlow: if it ever moves, the leak returns
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for name in [name for name in registry if name not in before and name.startswith("CustomGradient")]:
            del registry[name]


def _epoch_function(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss: keras.losses.Loss,
    data: Dataset,
    batch_size: int,
) -> Callable[[], tuple[tf.Tensor, tf.Tensor]]:
    """One epoch over the train split, reshuffled every call, as one compiled function returning
    the epoch's mean loss and accuracy (as ``fit`` reports them)."""
    import tensorflow as tf

    rows = len(data.y_train)
    x, y = tf.constant(data.x_train, tf.float32), tf.constant(data.y_train, tf.int64)
    class_weight = data.class_weight
    weight_of_class = (
        None
        if class_weight is None
        else tf.constant([class_weight.get(c, 1.0) for c in range(data.n_classes)], tf.float32)
    )
    variables = model.trainable_variables
    optimizer.build(variables)  # its slots must exist before tracing

    @tf.function
    def run_epoch() -> tuple[tf.Tensor, tf.Tensor]:
        order = tf.random.shuffle(tf.range(rows))
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for first in tf.range(0, rows, batch_size):
            batch = order[first : first + batch_size]
            x_batch, y_batch = tf.gather(x, batch), tf.gather(y, batch)
            weight = None if weight_of_class is None else tf.gather(weight_of_class, y_batch)
            with tf.GradientTape() as tape:
                probabilities = model(x_batch, training=True)
                batch_loss = loss(y_batch, probabilities, sample_weight=weight)
            optimizer.apply(tape.gradient(batch_loss, variables), variables)
            loss_sum += batch_loss * tf.cast(tf.size(y_batch), tf.float32)
            correct += _count_correct(y_batch, probabilities)
        return loss_sum / rows, correct / rows

    return run_epoch


def _evaluation_function(
    model: keras.Model, loss: keras.losses.Loss, input_shape: tuple[int, ...]
) -> Callable[[np.ndarray, np.ndarray], tuple[float, float]]:
    """Mean loss and accuracy of the model on ``(x, y)``, compiled once for any number of rows."""
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *input_shape], tf.float32), tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=signature)
    def sums(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        probabilities = model(x, training=False)
        return loss(y, probabilities) * tf.cast(tf.size(y), tf.float32), _count_correct(y, probabilities)

    def evaluate(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
        starts = range(0, len(y), _EVAL_BATCH_SIZE)
        loss_sum, correct = np.sum([sums(x[i : i + _EVAL_BATCH_SIZE], y[i : i + _EVAL_BATCH_SIZE]) for i in starts], 0)
        return float(loss_sum) / len(y), float(correct) / len(y)

    return evaluate


def _count_correct(y: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """How many rows the model classifies right."""
    import tensorflow as tf

    return tf.reduce_sum(tf.cast(classes(probabilities) == y, tf.float32))


def classes(probabilities: tf.Tensor) -> tf.Tensor:
    """Class indices from the head's output (one sigmoid unit means two classes)."""
    import tensorflow as tf

    if probabilities.shape[-1] == 1:
        return tf.cast(probabilities[:, 0] > 0.5, tf.int64)
    return tf.argmax(probabilities, axis=-1, output_type=tf.int64)


def predict_classes(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Class indices for ``x``."""
    starts = range(0, len(x), _EVAL_BATCH_SIZE)
    return np.concatenate([np.asarray(classes(model(x[i : i + _EVAL_BATCH_SIZE], training=False))) for i in starts])


def tflite_classes(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """Class indices for ``x`` by a ``.tflite`` model (quantized or not), run by LiteRT."""
    return np.asarray(classes(tflite_outputs(flatbuffer, x)))


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``accuracy`` or ``balanced_accuracy`` (scikit-learn's definitions)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    scorer = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score}[metric]
    return float(scorer(y_true, y_pred))
