"""Builders: a :class:`Candidate` → an uncompiled ``keras.Model``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tradeoff_search.space._space import Candidate

if TYPE_CHECKING:
    import keras


def build_model(candidate: Candidate, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """The candidate's network: its family's body, then the classification head.

    Two classes get one sigmoid unit (binary cross-entropy); more get a softmax.
    """
    import keras

    inputs = keras.Input(shape=input_shape, name="features")
    body = {"mlp": _mlp, "cnn1d": _cnn, "cnn2d": _cnn, "gru": _gru}[candidate.family]
    x = body(candidate, inputs)
    if candidate.dropout > 0:
        x = keras.layers.Dropout(candidate.dropout, name="dropout_head")(x)
    if n_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{candidate.family}_" + "x".join(map(str, candidate.widths)))


def _mlp(candidate: Candidate, inputs: keras.KerasTensor) -> keras.KerasTensor:
    """``[Dense → (BatchNorm) → activation → (Dropout)] × n_layers`` on the flattened input."""
    import keras

    x = keras.layers.Flatten()(inputs) if len(inputs.shape) > 2 else inputs
    for i, units in enumerate(candidate.units):
        x = keras.layers.Dense(units, use_bias=not candidate.batch_norm, name=f"dense_{i}")(x)
        x = _normalize_and_activate(candidate, x, i)
        if candidate.dropout > 0 and i < len(candidate.units) - 1:
            x = keras.layers.Dropout(candidate.dropout, name=f"dropout_{i}")(x)
    return x


def _cnn(candidate: Candidate, inputs: keras.KerasTensor) -> keras.KerasTensor:
    """Blocks of ``Conv → (BatchNorm) → activation → downsample`` (+ a residual connection,
    projected by a 1×1 convolution where the shape changes), then global average pooling."""
    import keras

    two_d = len(inputs.shape) == 4
    conv = keras.layers.Conv2D if two_d else keras.layers.Conv1D
    pool = keras.layers.MaxPooling2D if two_d else keras.layers.MaxPooling1D
    x = inputs
    for i, filters in enumerate(candidate.filters):
        stride = 2 if candidate.downsample == "stride" else 1
        y = conv(filters, candidate.kernel_size, strides=stride, padding="same", use_bias=not candidate.batch_norm,
                 name=f"conv_{i}")(x)  # fmt: skip
        y = _normalize_and_activate(candidate, y, i)
        if candidate.downsample == "max":
            y = pool(2, padding="same", name=f"max_pool_{i}")(y)
        if candidate.residual:
            shortcut = x
            if tuple(x.shape[1:]) != tuple(y.shape[1:]):
                step = 1 if candidate.downsample == "none" else 2
                shortcut = conv(filters, 1, strides=step, padding="same", name=f"shortcut_{i}")(x)
            y = keras.layers.Add(name=f"residual_{i}")([y, shortcut])
        x = y
    pooling = keras.layers.GlobalAveragePooling2D if two_d else keras.layers.GlobalAveragePooling1D
    return pooling(name="global_pool")(x)


def _gru(candidate: Candidate, inputs: keras.KerasTensor) -> keras.KerasTensor:
    """Stacked GRUs over the steps of a ``(steps, channels)`` input; the last one's final state."""
    import keras

    x = inputs
    last = len(candidate.gru_units) - 1
    for i, units in enumerate(candidate.gru_units):
        # Unrolled: LiteRT then runs plain ops instead of a TensorFlow while-loop it cannot fuse.
        x = keras.layers.GRU(units, return_sequences=i < last, unroll=True, name=f"gru_{i}")(x)
    return x


def _normalize_and_activate(candidate: Candidate, x: keras.KerasTensor, i: int) -> keras.KerasTensor:
    import keras

    if candidate.batch_norm:
        x = keras.layers.BatchNormalization(name=f"batch_norm_{i}")(x)
    return keras.layers.Activation(candidate.activation, name=f"{candidate.activation}_{i}")(x)


# Operator choices of which one does all the work of another in LiteRT, and more: a larger kernel
# (more multiply-adds per output), a residual connection (an Add, and a shortcut convolution where
# projected), max pooling instead of a stride of 2 (the full convolution, then a pooling). Each
# was slower in every one of 100+ pairs timed side by side (benchmarks/containment.py); at other
# runtimes only equal choices count.
_LITERT_AT_LEAST: dict[str, Callable[[Any, Any], bool]] = {
    "kernel_size": lambda big, small: big >= small,
    "residual": lambda big, small: big or not small,
    "downsample": lambda big, small: (big, small) == ("max", "stride"),
}


def contains(
    candidate: Candidate, smaller: Candidate, runtime: str = "litert", input_shape: Sequence[int] | None = None
) -> bool:
    """Whether ``candidate``'s inference graph does all the work of ``smaller``'s, and more or as much.

    True when both are of one family, each operator of ``smaller`` has a counterpart at least as
    large in ``candidate``, and so ``candidate``'s latency is at least ``smaller``'s: how a latency
    budget rejects a candidate without timing it. That is:

    - the same activation (a GRU's are its own) and batch norm (in ``litert`` batch norm is no
      operator: the converter folds it into the layer before; dropout is none at inference);
    - the same kernel size, downsampling and residual connections, or in ``litert`` a larger
      kernel, max pooling where ``smaller`` strides, a residual connection where it has none;
      shortcuts projected wherever ``smaller`` projects one, which depends on ``input_shape`` (one
      example's): unknown, it is taken at its worst for the proof (see :func:`_projected`);
    - no layer narrower than ``smaller``'s at the same depth, the last one (which feeds the head)
      no narrower than ``smaller``'s last; extra layers allowed (for CNNs only in ``litert``, where
      an extra block was measured to cost more than the positions it saves pooling).
    """
    if candidate.family != smaller.family:
        return False
    litert = runtime == "litert"
    operators = ["kernel_size", "downsample", "residual"]
    if candidate.family != "gru":
        operators += ["activation"] if litert else ["activation", "batch_norm"]
    for name in operators:
        big, small = getattr(candidate, name), getattr(smaller, name)
        if big != small and not (litert and name in _LITERT_AT_LEAST and _LITERT_AT_LEAST[name](big, small)):
            return False
    widths, smaller_widths = candidate.widths, smaller.widths
    if len(widths) != len(smaller_widths) and candidate.family in ("cnn1d", "cnn2d") and not litert:
        return False
    if smaller.residual:
        if input_shape is None:  # the worst case: as wide as candidate's first block, too short to downsample
            input_shape = (*[1] * (2 if candidate.family == "cnn2d" else 1), candidate.widths[0])
        shortcuts = zip(_projected(candidate, input_shape), _projected(smaller, input_shape), strict=False)
        if not all(big or not small for big, small in shortcuts):
            return False
    return (
        len(widths) >= len(smaller_widths)
        and all(big >= small for big, small in zip(widths, smaller_widths, strict=False))
        and widths[-1] >= smaller_widths[-1]
    )


def _projected(candidate: Candidate, input_shape: Sequence[int]) -> list[bool]:
    """Per block of a residual CNN on inputs of ``input_shape``, whether its shortcut is projected
    (as :func:`_cnn` builds it): where the block changes the shape, its width or, downsampling
    ("same" padding: ⌈n / 2⌉), its steps or pixels; a side of 1 stays 1."""
    shape, projected = tuple(input_shape), []
    for width in candidate.widths:
        sides = shape[:-1] if candidate.downsample == "none" else tuple(math.ceil(side / 2) for side in shape[:-1])
        projected.append((*sides, width) != shape)
        shape = (*sides, width)
    return projected


# Standard layers that do no multiply-adds worth counting at inference: reshaping, pooling,
# element-wise merges and activations, regularizers (identity at inference), lookups, and batch
# normalization (the converter folds it into the layer before).
_NO_MACS = (
    "InputLayer", "Flatten", "Reshape", "Permute", "RepeatVector", "Identity", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Activation",
    "ReLU", "LeakyReLU", "ELU", "Softmax", "BatchNormalization", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
    "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "Rescaling",
    "Embedding",
)  # fmt: skip


def count_macs(model: keras.Model) -> int | None:
    """Multiply-adds of one inference on one example; None when a layer is not one the count
    knows (see :func:`uncounted_layers`): unknown, rather than a guess.

    Dense: inputs × units per position; convolutions: kernel volume × input channels × output
    positions × filters (depthwise: without the filters factor; separable: depthwise, then the
    pointwise 1×1); GRU, LSTM and SimpleRNN: gates × (inputs + units) × units per step. Layers
    nested in a model are counted where they sit; the layers of :data:`_NO_MACS` count 0.
    """
    total = 0
    for layer in _leaves(model):
        macs = _layer_macs(layer)
        if macs is None:
            return None
        total += macs
    return total


def uncounted_layers(model: keras.Model) -> list[str]:
    """``name (Class)`` of each layer of ``model`` that :func:`count_macs` does not know."""
    return [f"{layer.name} ({type(layer).__name__})" for layer in _leaves(model) if _layer_macs(layer) is None]


def _leaves(model: keras.Model) -> list[keras.layers.Layer]:
    import keras

    leaves = []
    for layer in model.layers:
        leaves += _leaves(layer) if isinstance(layer, keras.Model) else [layer]
    return leaves


def _layer_macs(layer: keras.layers.Layer) -> int | None:
    """The layer's multiply-adds per example; None if its kind is not known here (a subclass of a
    known layer included: its ``call`` may do anything)."""
    import keras

    layers = keras.layers
    kind = type(layer)
    if kind.__name__ in _NO_MACS and kind is getattr(layers, kind.__name__, None):
        return 0
    try:
        if kind is layers.Dense:
            return _positions(layer) * _volume(layer.kernel.shape)
        if kind in (layers.DepthwiseConv1D, layers.DepthwiseConv2D, layers.Conv1D, layers.Conv2D):
            return _positions(layer) * _volume(layer.kernel.shape)  # (*window, in_channels, filters or multiplier)
        if kind in (layers.SeparableConv1D, layers.SeparableConv2D):
            return _positions(layer) * (_volume(layer.depthwise_kernel.shape) + _volume(layer.pointwise_kernel.shape))
        gates = {layers.GRU: 3, layers.LSTM: 4, layers.SimpleRNN: 1}.get(kind)
        if gates is not None:
            steps, features = layer.input.shape[1], layer.input.shape[2]
            return int(steps) * gates * (int(features) + layer.units) * layer.units
    except (AttributeError, ValueError, TypeError):  # e.g. a layer called twice (shared): no single output
        return None
    return None


def _positions(layer: keras.layers.Layer) -> int:
    """Output positions per example (1 for a Dense on flat inputs)."""
    return _volume(layer.output.shape[1:-1])


def _volume(shape: tuple[Any, ...]) -> int:
    volume = 1
    for size in shape:
        volume *= int(size)
    return volume
