"""The drift reference as a LiteRT flatbuffer, written without TensorFlow.

The same operators the converter makes of :func:`tradeoff_search.cost._latency.reference_model` (an MLP
64 → 128 → 128 → 10: ``FULLY_CONNECTED`` with fused ReLU twice, ``FULLY_CONNECTED``,
``SOFTMAX``; no biases, since the converter drops all-zero ones), written with the LiteRT schema's
own flatbuffer classes. A latency server builds it on the device from the package alone (no
TensorFlow there, and no model file to ship), and the local harness times the very same bytes,
so both interleave one reference.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

_LAYERS = (64, 128, 128, 10)


@functools.cache
def reference_flatbuffer() -> bytes:
    """The reference model's ``.tflite`` bytes (fixed seed: the same bytes in every process)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    rng = np.random.default_rng(0)
    buffers = [schema.BufferT()]  # buffer 0 is the empty one, by convention
    tensors, operators = [_tensor(schema, "x", _LAYERS[0], 0)], []
    activation = schema.ActivationFunctionType
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(_LAYERS)):
        weights = schema.BufferT()
        limit = np.sqrt(6 / (n_in + n_out))  # Glorot-uniform, as Keras initializes Dense
        weights.data = rng.uniform(-limit, limit, (n_out, n_in)).astype("<f4").view(np.uint8).ravel()
        buffers.append(weights)
        source = len(tensors) - 1  # the input, then the previous layer's output
        tensors.append(_tensor(schema, f"dense_{layer}/kernel", n_in, len(buffers) - 1, rows=n_out))
        tensors.append(_tensor(schema, f"dense_{layer}", n_out, 0))
        options = schema.FullyConnectedOptionsT()
        options.fusedActivationFunction = activation.NONE if n_out == _LAYERS[-1] else activation.RELU
        inputs = [source, len(tensors) - 2, -1]  # -1: no bias
        operators.append(_operator(schema, 0, inputs, len(tensors) - 1, "FullyConnectedOptions", options))
    tensors.append(_tensor(schema, "probabilities", _LAYERS[-1], 0))
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    operators.append(_operator(schema, 1, [len(tensors) - 2], len(tensors) - 1, "SoftmaxOptions", softmax))

    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = tensors, operators, "main"
    subgraph.inputs, subgraph.outputs = [0], [len(tensors) - 1]
    model = schema.ModelT()
    model.version, model.description = 3, "tradeoff_search reference"
    model.subgraphs, model.buffers = [subgraph], buffers
    model.operatorCodes = [_opcode(schema, schema.BuiltinOperator.FULLY_CONNECTED),
                           _opcode(schema, schema.BuiltinOperator.SOFTMAX)]  # fmt: skip
    builder = flatbuffers.Builder(1 << 17)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor(schema, name: str, width: int, buffer: int, rows: int | None = None):  # type: ignore[no-untyped-def]
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer = name, schema.TensorType.FLOAT32, buffer
    tensor.shape = [rows, width] if rows is not None else [1, width]
    tensor.shapeSignature = None if rows is not None else [-1, width]
    return tensor


def _operator(schema, opcode: int, inputs: list[int], output: int, kind: str, options):  # type: ignore[no-untyped-def]
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = opcode, inputs, [output]
    operator.builtinOptionsType, operator.builtinOptions = getattr(schema.BuiltinOptions, kind), options
    return operator


def _opcode(schema, builtin: int):  # type: ignore[no-untyped-def]
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
    return code
