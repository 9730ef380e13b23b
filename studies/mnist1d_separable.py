"""A depthwise-separable 1-D CNN for MNIST-1D: your own model in a tradeoff_search study.

The study calls ``separable_cnn(trial, input_shape, n_classes)`` once per trial. Like Keras
Tuner's ``build(hp)``, it suggests its hyperparameters and returns the model; unlike it, the
model comes back uncompiled: the study searches the optimizer, learning rate, schedule and batch
size around it, trains it, converts it to LiteRT and times it.

    python -m tradeoff_search run studies/mnist1d_separable.toml
"""

import keras
import optuna


def separable_cnn(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """A plain convolution on the raw signal, then blocks of depthwise-separable convolutions:
    each block filters every channel on its own (depthwise) and then mixes channels (pointwise),
    for far fewer multiply-adds than a full convolution of the same width."""
    kernel = trial.suggest_categorical("kernel", [3, 5, 7])
    activation = trial.suggest_categorical("act", ["relu", "gelu"])
    inputs = keras.Input(shape=input_shape)
    stem = trial.suggest_int("stem_filters", 8, 32, log=True)
    x = keras.layers.Conv1D(stem, kernel, padding="same", activation=activation)(inputs)
    for i in range(trial.suggest_int("blocks", 1, 3)):
        filters = trial.suggest_int(f"block_filters_{i}", 8, 64, log=True)
        x = keras.layers.SeparableConv1D(filters, kernel, padding="same", activation=activation)(x)
        x = keras.layers.MaxPooling1D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    dropout = trial.suggest_float("head_dropout", 0.0, 0.3)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="separable_cnn")
