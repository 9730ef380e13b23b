"""Builders: a :class:`Candidate` → an uncompiled ``keras.Model``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradeoff_search._space import Candidate

if TYPE_CHECKING:
    import keras


def build_model(candidate: Candidate, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """An MLP: ``[Dense → (BatchNorm) → activation → (Dropout)] × n_layers → head``.

    Two classes get one sigmoid unit (binary cross-entropy); more get a softmax.
    """
    import keras

    inputs = keras.Input(shape=input_shape, name="features")
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(candidate.units):
        x = keras.layers.Dense(units, use_bias=not candidate.batch_norm, name=f"dense_{i}")(x)
        if candidate.batch_norm:
            x = keras.layers.BatchNormalization(name=f"batch_norm_{i}")(x)
        x = keras.layers.Activation(candidate.activation, name=f"{candidate.activation}_{i}")(x)
        if candidate.dropout > 0:
            x = keras.layers.Dropout(candidate.dropout, name=f"dropout_{i}")(x)
    if n_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp_" + "x".join(map(str, candidate.units)))


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one inference on one example (batch norm counted as folded away).

    Dense: inputs × units; convolutions: kernel volume × input channels × output positions ×
    filters (depthwise: without the filters factor); GRU: 3 gates × (inputs + units) × units per
    step.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel = layer.kernel.shape
            total += int(kernel[0]) * int(kernel[1])
        elif isinstance(layer, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D):
            kernel = layer.kernel.shape  # (*window, channels, multiplier)
            total += _positions(layer) * _volume(kernel)
        elif isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D):
            kernel = layer.kernel.shape  # (*window, in_channels, filters)
            total += _positions(layer) * _volume(kernel)
        elif isinstance(layer, keras.layers.GRU):
            steps, features = layer.input.shape[1], layer.input.shape[2]
            total += int(steps) * 3 * (int(features) + layer.units) * layer.units
    return total


def _positions(layer: keras.layers.Layer) -> int:
    return _volume(layer.output.shape[1:-1])


def _volume(shape: tuple[int | None, ...]) -> int:
    volume = 1
    for size in shape:
        volume *= int(size)
    return volume
