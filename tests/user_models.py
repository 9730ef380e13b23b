"""Builders as users write them (public Keras and Optuna APIs only), for the builder tests.

``build(trial, input_shape, n_classes) -> keras.Model``: uncompiled, suggesting its own
hyperparameters on the Optuna ``trial``.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import optuna
import tensorflow as tf


def two_branch(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Functional API, two branches: a wide one and a deep one, concatenated."""
    inputs = keras.Input(shape=input_shape)
    flat = keras.layers.Flatten()(inputs)
    wide = keras.layers.Dense(trial.suggest_int("wide_units", 4, 16), activation="relu")(flat)
    deep = keras.layers.Dense(trial.suggest_int("deep_units", 4, 8), activation="relu")(flat)
    deep = keras.layers.Dense(4, activation="relu")(deep)
    merged = keras.layers.Concatenate()([wide, deep])
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(merged))


def separable(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """A ``keras.Sequential`` of depthwise-separable 1-D convolutions."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.SeparableConv1D(trial.suggest_int("sep_filters", 2, 8), 2, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )


def conditional(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """A categorical choice of block, and parameters that exist only for one of them."""
    inputs = keras.Input(shape=input_shape)
    block = trial.suggest_categorical("block", ["dense", "conv"])
    if block == "conv":
        x = keras.layers.Conv1D(trial.suggest_int("conv_filters", 2, 8), 2, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling1D()(x)
    else:
        activation = trial.suggest_categorical("dense_activation", ["relu", "tanh"])
        x = keras.layers.Dense(trial.suggest_int("dense_units", 4, 16), activation=activation)(
            keras.layers.Flatten()(inputs)
        )
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


# ---------------------------------------------------------------------------- builders users get wrong
def raises(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    units = trial.suggest_int("units", 4, 8)
    return units / 0  # type: ignore[return-value]


def not_a_model(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    return keras.layers.Dense(n_classes, activation="softmax")(inputs)  # a tensor, not a model


def wrong_input(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    inputs = keras.Input(shape=(28, 28))  # written for another dataset
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


def wrong_width(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))  # 10 classes, whatever the data


def logits(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_classes)(x))  # no softmax


def compiled(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """What a Keras Tuner ``build(hp)`` returns: a compiled model."""
    model = two_branch(trial, input_shape, n_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def takes_learning_rate(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)  # the study's own
    return two_branch(trial, input_shape, n_classes)


class _PythonOp(keras.layers.Layer):
    """Runs Python in the graph: LiteRT has no such operator."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(tf.numpy_function(np.tanh, [x], tf.float32), x.shape)


def not_convertible(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = _PythonOp()(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


class _SlowToConvert(keras.layers.Layer):
    """Stands in for a model the converter never finishes with: it sleeps when traced into a graph
    for inference (``training=False``), which the conversion to LiteRT is the first to do."""

    def __init__(self, seconds: float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if training is False and not tf.executing_eagerly():
            time.sleep(self.seconds)
        return x


def slow_to_convert_first(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Trial 0's model takes ten minutes to convert; the others' at once."""
    inputs = keras.Input(shape=input_shape)
    x = _SlowToConvert(600 if trial.number == 0 else 0)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


def slow_to_convert_when_retimed(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Converts at once in a trial; for 15 s when rebuilt from its parameters to re-time the front."""
    inputs = keras.Input(shape=input_shape)
    x = _SlowToConvert(15 if isinstance(trial, optuna.trial.FixedTrial) else 0)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


class _Scaled(keras.layers.Layer):
    """Holds an array it was given, with no ``get_config``: Keras cannot save it."""

    def __init__(self, scale: np.ndarray, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.scale = np.asarray(scale, np.float32)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x * self.scale


def unsaveable(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    x = _Scaled(np.ones(int(np.prod(input_shape))))(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))
