"""Inference latency as a measurement: what to time, on which backend, with which reference.

Why not ``model.predict``: at batch 1 Keras/TF spend 0.4–60 ms of framework overhead per call,
which hides the model (a 1k- and a 300k-parameter MLP look alike). LiteRT, the deployment runtime
for small models, runs them in ~1–100 µs, so its timings rank them. How they are timed (a low
quantile of interleaved short blocks) is the harness's job (``_harness``); where they are timed
(this machine, or a latency server on the target device) the backend's (``_backends``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search.cost._backends import latency_backend
from tradeoff_search.cost._convert import to_tflite
from tradeoff_search.cost._harness import LOCAL, LatencyStats, Setting, cpu_model, time_invokers
from tradeoff_search.cost._lock import machine_lock
from tradeoff_search.cost._reference import reference_flatbuffer
from tradeoff_search.rules import AT_LEAST_ONE, POSITIVE, OrNone, Rule, Scalar, spec_rule
from tradeoff_search.spec._sections import LatencySection
from tradeoff_search.spec._validation import validate_params

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

# One rule per parameter, the spec's where it is the same setting ([latency]).
_PARAMETERS: dict[str, Rule] = {
    name: spec_rule(LatencySection, name) for name in ("runtime", "threads", "statistic", "max_seconds", "device")
} | {
    "batch_size": Scalar(int, AT_LEAST_ONE),
    "stop_above_reference": OrNone(Scalar(float, POSITIVE)),
}
__all__ = ["LatencyStats", "calibrate_reference", "cpu_model", "measure_latencies", "measure_latency", "to_tflite"]


def reference_model() -> keras.Model:
    """The fixed drift reference: an MLP 64 → 128 → 128 → 10 (~26k multiply-adds), the same in
    every process and on every machine (its weights do not change its latency). LiteRT times its
    twin written without TensorFlow (:func:`tradeoff_search.cost._reference.reference_flatbuffer`, the
    same operators), so a latency server needs no TensorFlow; ``runtime="tf"`` times this one."""
    import keras

    inputs = keras.Input(shape=(64,), name="features")
    x = keras.layers.Dense(128, activation="relu")(inputs)
    x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="latency_reference")


@validate_params(**_PARAMETERS)
def measure_latency(
    model: keras.Model | bytes,
    runtime: str = "litert",
    batch_size: int = 1,
    threads: int = 1,
    statistic: str = "p10",
    max_seconds: float = 1.0,
    reference: bool = True,
    stop_above_reference: float | None = None,
    device: str = LOCAL,
) -> LatencyStats:
    """Measure the per-call inference latency of ``model``.

    Args:
        model: a Keras model, or (for ``litert``) an already converted ``.tflite`` flatbuffer.
        runtime: ``"litert"`` (LiteRT interpreter, the deployment runtime for small models) or
            ``"tf"`` (a ``tf.function`` with a fixed input signature, for server-side TensorFlow).
        batch_size: rows per call.
        threads: intra-op threads of the runtime.
        statistic: what :attr:`LatencyStats.value_ms` reports, ``"p10"`` or ``"median"``.
        max_seconds: time cap; timing stops earlier once the statistic's 95% confidence interval
            is within ±2% (for the reference too).
        reference: also time the reference model in interleaved blocks, for drift control.
        stop_above_reference: stop timing as soon as the model's statistic is, at 95% confidence,
            above this multiple of the reference's (how a latency budget rejects a model without
            timing it precisely: from the 5th round of blocks, after a 10 ms warm-up instead of
            50 ms). Needs ``reference``.
        device: ``"local"`` (this machine, holding its timing lock) or the URL of a latency
            server, ``"http://HOST:PORT"`` (``python -m tradeoff_search device serve`` on the
            target device; its token, if any, is read from ``TRADEOFF_SEARCH_DEVICE_TOKEN``).
            ``litert`` only.

    Example:
        >>> stats = measure_latency(model)  # doctest: +SKIP
        >>> stats.value_ms, stats.median_ms, stats.cpu  # doctest: +SKIP
    """
    return measure_latencies(
        [model], runtime, batch_size, threads, statistic, max_seconds, reference, stop_above_reference, device
    )[0]


@validate_params(**_PARAMETERS)
def measure_latencies(
    models: Sequence[keras.Model | bytes],
    runtime: str = "litert",
    batch_size: int = 1,
    threads: int = 1,
    statistic: str = "p10",
    max_seconds: float = 1.0,
    reference: bool = True,
    stop_above_reference: float | None = None,
    device: str = LOCAL,
) -> list[LatencyStats]:
    """:func:`measure_latency` for several models at once, timed side by side: one short block of
    each in turn, round after round, so that all see the same machine states. With
    ``stop_above_reference``, timing stops once every model is surely above that multiple of the
    reference."""
    setting = Setting(batch_size, threads, statistic, max_seconds, reference, stop_above_reference)
    for model in models:
        if not isinstance(model, bytes) and not hasattr(model, "input_shape"):
            raise TypeError(f"model: expected a Keras model or the bytes of a .tflite file, got {type(model).__name__}")
    if runtime == "litert":
        backend = latency_backend(device)
        return backend.measure([m if isinstance(m, bytes) else to_tflite(m, signature=False) for m in models], setting)
    if device != LOCAL:
        raise ValueError(f"device={device!r}: a latency server times .tflite files, so it needs runtime='litert'")
    if any(isinstance(model, bytes) for model in models):
        raise ValueError("runtime='tf' needs a Keras model, not a .tflite flatbuffer")
    timed = [*models, _keras_reference()] if reference else list(models)
    invokers = [_tf_invoker(model, batch_size, threads) for model in timed]
    import tensorflow as tf

    with machine_lock(shared=False):  # no worker on this machine trains while we time
        return time_invokers(invokers, [None] * len(models), setting, "tf", f"tensorflow {tf.__version__}")


def calibrate_reference(
    runtime: str = "litert", batch_size: int = 1, threads: int = 1, max_seconds: float = 2.0, device: str = LOCAL
) -> dict[str, Any]:
    """The reference model's latency, measured alone on ``device``: what
    :meth:`LatencyStats.normalized_ms` scales to. A study stores one and every trial, process
    and worker uses it."""
    reference = reference_flatbuffer() if runtime == "litert" else _keras_reference()
    stats = measure_latencies([reference], runtime, batch_size, threads, "p10", max_seconds, False, None, device)[0]
    return {"p10_ms": stats.p10_ms, "median_ms": stats.median_ms, "runtime": runtime, "batch_size": batch_size,
            "threads": threads, "device": device, "cpu": stats.cpu, "logical_cores": stats.logical_cores,
            "runtime_version": stats.runtime_version}  # fmt: skip


@functools.cache
def _keras_reference() -> keras.Model:
    return reference_model()


def _tf_invoker(model: keras.Model, batch_size: int, threads: int) -> Callable[[], Any]:
    """Calls of ``model`` at ``batch_size``, on the CPU even where training runs on a GPU: a copy
    of the model is made there and the call traced there."""
    import keras
    import tensorflow as tf

    _set_tf_threads(threads)
    with tf.device("/CPU:0"):
        try:
            on_cpu = keras.models.clone_model(model)
            on_cpu.set_weights(model.get_weights())
        except (TypeError, ValueError, NotImplementedError):  # e.g. a subclassed model: its weights stay put
            on_cpu = model
        spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], tf.float32)
        function = tf.function(lambda x: on_cpu(x, training=False), input_signature=[spec]).get_concrete_function()
        x = tf.constant(np.random.default_rng(0).random(spec.shape, dtype=np.float32))
    return functools.partial(function, x)


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # fixed once TF has started; then keep what it has
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
