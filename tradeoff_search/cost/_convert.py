"""Keras → LiteRT flatbuffer, as the deployment ships it: float32 or post-training quantized.

The modes and their settings are those of TensorFlow's ``tf.lite.TFLiteConverter``:

- ``none``: float32, the converter's defaults;
- ``float16``: ``optimizations = [Optimize.DEFAULT]``, ``target_spec.supported_types = [float16]``
  (float16 weights, half the bytes; the CPU kernels compute in float32);
- ``dynamic``: ``optimizations = [Optimize.DEFAULT]`` (dynamic-range: int8 weights, activations
  quantized on the fly);
- ``int8``: full-integer, ``optimizations = [Optimize.DEFAULT]``, a ``representative_dataset``
  (rows of the training split) to calibrate activation ranges, and
  ``target_spec.supported_ops = [OpsSet.TFLITE_BUILTINS_INT8]``, so an operator without an int8
  kernel is the converter's error, not a silent float fallback; ``inference_input_type`` and
  ``inference_output_type`` stay float32 unless ``io = "int8"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io as _io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search.process._channel import time_limit
from tradeoff_search.record._keys import QUANTIZATION_PARAM
from tradeoff_search.spec._sections import QUANTIZATIONS

if TYPE_CHECKING:
    import keras
    import optuna

    from tradeoff_search.spec._spec import StudySpec

# What the deprecated graph path of signature-less conversion says every time: we chose it for speed.
_OWN_NOTICES = ("trackable_obj",)
_EVAL_ROWS = 1024  # rows per interpreter call when scoring


class ConversionError(RuntimeError):
    """The converter cannot apply a quantization mode to a model; the message is its reason."""


@dataclass(frozen=True)
class Conversion:
    """A converted model: the ``.tflite`` bytes, its mode and what the converter warned about."""

    flatbuffer: bytes
    quantization: str
    warnings: tuple[str, ...] = ()


def convert(
    model: keras.Model,
    quantization: str = "none",
    *,
    representative: np.ndarray | None = None,
    io: str = "float",
    signature: bool = True,
    timeout: float | None = None,
) -> Conversion:
    """Convert a Keras model to a LiteRT flatbuffer (batch dimension left dynamic).

    Args:
        model: the model.
        quantization: one of ``"none"``, ``"float16"``, ``"dynamic"``, ``"int8"`` (see the module
            docstring).
        representative: rows to calibrate ``int8`` on (its ``representative_dataset``), e.g.
            :func:`representative_rows` of the training split.
        io: ``"float"`` or ``"int8"``: the input and output type of an ``int8`` model.
        signature: keep a ``serving_default`` signature, as a file to deploy needs. Timing does
            not. Either way the traced inference function is converted, which the converter
            freezes itself, and the signature ``from_keras_model`` would write (the model's input
            by its name, ``output_0``) is added to the file: the same operators, outputs and
            signature in a fifth of the time (0.2 vs 1 s for a 4k-parameter MLP), because
            ``from_keras_model`` first writes and reloads a SavedModel. Only a model without named
            inputs (subclassed) takes that path.
        timeout: seconds after which this process's pool, if it has one, ends it (nothing in the
            process can interrupt the converter; see :func:`~tradeoff_search.process._channel.time_limit`).

    Raises:
        ConversionError: the converter cannot quantize the model so (e.g. an operator without an
            int8 kernel); its reason is the message.
    """
    traced = TracedModel(model)
    return traced.convert(quantization, representative=representative, io=io, signature=signature, timeout=timeout)


class TracedModel:
    """A Keras model traced once for every conversion of it (see :func:`convert`): a conversion
    freezes the trace with the model's variables as they are then, so one trace made before
    training converts the trained model too (measured: ~0.02–0.1 s a trace, ~0.05 s a conversion).

    Args:
        model: the model.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._input_name = _input_name(model)
        self._traced = _ConverterSource(model, signature=False)
        self._saved_model = _ConverterSource(model, signature=True)  # a model without named inputs, signed

    def convert(
        self,
        quantization: str = "none",
        *,
        representative: np.ndarray | None = None,
        io: str = "float",
        signature: bool = True,
        timeout: float | None = None,
    ) -> Conversion:
        """The model with its weights as they are now, converted as :func:`convert` says."""
        _check_mode(quantization, representative, io)
        signs = signature and self._input_name is not None
        source = self._saved_model if signature and not signs else self._traced
        conversion = _convert(source, quantization, representative, io, timeout)
        if not signs:
            return conversion
        return dataclasses.replace(conversion, flatbuffer=_signed(conversion.flatbuffer, str(self._input_name)))


def _traced(model: keras.Model | TracedModel) -> TracedModel:
    """``model``'s trace: its own if it is a :class:`TracedModel`, else a new one."""
    return model if isinstance(model, TracedModel) else TracedModel(model)


def _input_name(model: keras.Model) -> str | None:
    """The name of the model's one input, the key of its signature; None when it has no symbolic
    inputs (a subclassed model) or several."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or len(inputs) != 1 or not outputs or len(outputs) != 1:
        return None
    return str(inputs[0].name)


def _signed(flatbuffer: bytes, input_name: str) -> bytes:
    """``flatbuffer`` with the ``serving_default`` signature of its main subgraph's input and output,
    as ``from_keras_model`` names them (``input_name``, ``output_0``)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    subgraph = model.subgraphs[0]  # the main one; others are control flow's bodies

    def tensor(name: str, index: int) -> Any:
        mapped = schema.TensorMapT()
        mapped.name, mapped.tensorIndex = name, index
        return mapped

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs = [tensor(input_name, subgraph.inputs[0])]
    signature.outputs = [tensor("output_0", subgraph.outputs[0])]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def convert_modes(
    model: keras.Model | TracedModel,
    modes: Sequence[str],
    *,
    representative: np.ndarray | None = None,
    io: str = "float",
    timeout: float | None = None,
) -> dict[str, Conversion | ConversionError]:
    """:func:`convert` without signature in each of ``modes`` (``representative`` and ``io`` for
    ``int8``), from one trace of the model: each mode converted, or the reason it cannot be."""
    for mode in modes:
        _check_mode(mode, representative if mode == "int8" else None, io if mode == "int8" else "float")
    traced = _traced(model)
    converted: dict[str, Conversion | ConversionError] = {}
    for mode in modes:
        int8 = mode == "int8"
        try:
            converted[mode] = traced.convert(mode, representative=representative if int8 else None,
                                             io=io if int8 else "float", signature=False, timeout=timeout)  # fmt: skip
        except ConversionError as error:
            converted[mode] = error
    return converted


def _check_mode(quantization: str, representative: np.ndarray | None, io: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: expected one of {QUANTIZATIONS}")
    if quantization == "int8" and representative is None:
        raise ValueError("quantization='int8' needs representative rows to calibrate on")
    if io not in ("float", "int8") or (io == "int8" and quantization != "int8"):
        raise ValueError(f"io={io!r}: expected 'float', or 'int8' with quantization='int8'")


def _convert(
    source: _ConverterSource, quantization: str, representative: np.ndarray | None, io: str, timeout: float | None
) -> Conversion:
    import tensorflow as tf

    quiet = _native_stderr_dropped() if quantization == "int8" else contextlib.nullcontext()
    limit = time_limit(timeout, f"the conversion to LiteRT ({quantization})")
    # Keras prints the exported signature to stdout; keep the console for progress and results.
    with limit, _warnings_kept() as notes, quiet, contextlib.redirect_stdout(_io.StringIO()):
        converter = source.converter()
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            rows = np.asarray(representative, np.float32)
            converter.representative_dataset = lambda: ([row[None]] for row in rows)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io == "int8":
                converter.inference_input_type = converter.inference_output_type = tf.int8
        try:
            flatbuffer = converter.convert()
        except Exception as error:
            if quantization == "none":
                raise  # a float model that does not convert is a bug, not a trial's fate
            raise ConversionError(f"{quantization}: {conversion_reason(error)}") from error
    if quantization == "int8":
        _check_full_integer(flatbuffer)
    return Conversion(flatbuffer, quantization, tuple(dict.fromkeys(notes)))


class _ConverterSource:
    """A fresh ``TFLiteConverter`` of ``model`` per mode: from the Keras model (with signature), or
    from its inference function, traced once for every mode (measured: ~0.05–0.1 s a trace)."""

    def __init__(self, model: keras.Model, signature: bool) -> None:
        self.model, self.signature = model, signature
        self._traced: Any = None

    def converter(self) -> Any:
        import tensorflow as tf

        if self.signature:
            return tf.lite.TFLiteConverter.from_keras_model(self.model)
        if self._traced is None:
            model = self.model
            spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
            infer = tf.function(tf.autograph.experimental.do_not_convert(lambda x: model(x, training=False)))
            self._traced = infer.get_concrete_function(spec)
        return tf.lite.TFLiteConverter.from_concrete_functions([self._traced])


def quantizes_weights(flatbuffer: bytes) -> bool:
    """Whether a ``dynamic`` conversion quantized any weight: none of at least 1024 elements, and
    the converter leaves the float32 model (same operators, same latency, same accuracy)."""
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(model_content=flatbuffer).get_tensor_details()
    return any(np.dtype(t["dtype"]) == np.int8 for t in tensors)


def to_tflite(model: keras.Model, signature: bool = True) -> bytes:
    """:func:`convert` in float32: the ``.tflite`` bytes alone."""
    return convert(model, signature=signature).flatbuffer


@contextlib.contextmanager
def _native_stderr_dropped() -> Iterator[None]:
    """Drop what native code prints to the process's stderr meanwhile: int8 calibration prints its
    settings (``fully_quantize: 0, inference_type: 6, …``) on every conversion. The converter's
    errors are its exception's message, its Python warnings are kept by :func:`_warnings_kept`."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _check_full_integer(flatbuffer: bytes) -> None:
    """Full-integer means every operator runs an int8 kernel. The converter does not refuse an
    operator without one, even with ``TFLITE_BUILTINS_INT8``: it keeps it in float32 between a
    ``DEQUANTIZE`` and a ``QUANTIZE``. Such a model is refused here, naming the operators."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    tensors = interpreter.get_tensor_details()
    floats = sorted({op["op_name"] for op in interpreter._get_ops_details()  # the public API lists no operators
                     if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
                     and any(i >= 0 and tensors[i]["dtype"] == np.float32 for i in op["inputs"])})  # fmt: skip
    if floats:
        raise ConversionError(f"int8: no int8 kernel for {', '.join(floats)}: the converter kept "
                              f"{'it' if len(floats) == 1 else 'them'} in float32, not full-integer")  # fmt: skip


def conversion_reason(error: Exception) -> str:
    """The converter's reason, one line: its message holds MLIR's call stack, the reason is on its
    ``error:`` lines."""
    reasons = re.findall(r"error: ([^\n]+)", str(error)) or [str(error)]
    return " ".join(" ".join(dict.fromkeys(reasons)).split())[:600]


@contextlib.contextmanager
def _warnings_kept() -> Iterator[list[str]]:
    """Collect the converter's Python and absl warnings instead of printing them."""
    notes: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    absl_logger, handler = logging.getLogger("absl"), _Keep(logging.WARNING)
    propagate = absl_logger.propagate
    absl_logger.addHandler(handler)
    absl_logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield notes
        notes.extend(str(w.message) for w in caught)
    finally:
        absl_logger.removeHandler(handler)
        absl_logger.propagate = propagate
    notes[:] = [n.strip() for n in notes if not any(own in n for own in _OWN_NOTICES)]


def representative_rows(x_train: np.ndarray, rows: int) -> np.ndarray:
    """The calibration sample of ``int8``: ``rows`` rows of the training split, the same ones in
    every trial, process and in ``select`` (a fixed draw), so one model always converts alike."""
    order = np.random.default_rng(0).permutation(len(x_train))[:rows]
    return np.asarray(x_train[np.sort(order)], np.float32)


def suggest_quantization(trial: optuna.Trial, spec: StudySpec) -> str:
    """The trial's quantization mode: the parameter ``quantization`` unless the spec keeps float32
    only (then no parameter, as in studies without quantization)."""
    choices = spec.latency.quantization.choices
    if choices == ("none",):
        return "none"
    return str(trial.suggest_categorical(QUANTIZATION_PARAM, list(choices)))


def quantization_of(params: dict[str, object]) -> str:
    """A finished trial's quantization mode, from its parameters."""
    return str(params.get(QUANTIZATION_PARAM, "none"))


def convert_as_shipped(
    model: keras.Model | TracedModel,
    quantization: str,
    spec: StudySpec,
    x_train: np.ndarray,
    *,
    signature: bool = True,
) -> Conversion:
    """:func:`convert` with the spec's ``[latency]`` settings: its calibration rows, ``io`` and
    ``conversion_timeout``; a :class:`TracedModel` is converted from its trace."""
    latency = spec.latency
    rows = representative_rows(x_train, latency.representative_rows) if quantization == "int8" else None
    io = latency.io if quantization == "int8" else "float"
    traced = _traced(model)
    return traced.convert(quantization, representative=rows, io=io, signature=signature,
                          timeout=latency.conversion_timeout)  # fmt: skip


def convert_modes_as_shipped(
    model: keras.Model | TracedModel, modes: Sequence[str], spec: StudySpec, x_train: np.ndarray
) -> dict[str, Conversion | ConversionError]:
    """:func:`convert_modes` with the spec's ``[latency]`` settings (see :func:`convert_as_shipped`)."""
    latency = spec.latency
    rows = representative_rows(x_train, latency.representative_rows) if "int8" in modes else None
    return convert_modes(model, modes, representative=rows, io=latency.io, timeout=latency.conversion_timeout)


def tflite_outputs(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """The outputs for the rows ``x`` of the ``.tflite`` model, as the LiteRT interpreter runs it:
    inputs quantized and outputs dequantized as its tensors say, in calls of up to 1024 rows."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs, size = [], None
    for start in range(0, len(x), _EVAL_ROWS):
        rows = np.asarray(x[start : start + _EVAL_ROWS], np.float32)
        if len(rows) != size:
            size = len(rows)
            interpreter.resize_tensor_input(source["index"], [size, *rows.shape[1:]])
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], _quantize(rows, source))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(target["index"]), target))
    return np.concatenate(outputs)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32:
        return x
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return y if detail["dtype"] == np.float32 else (y.astype(np.float32) - zero_point) * scale


def tensor_types(flatbuffer: bytes) -> dict[str, str]:
    """The input and output types of a ``.tflite`` model (``float32``, ``int8``)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    return {"input_type": np.dtype(source["dtype"]).name, "output_type": np.dtype(target["dtype"]).name}
