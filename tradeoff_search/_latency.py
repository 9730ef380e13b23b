"""Inference latency as a measurement: robust statistics, runtime and machine fingerprint.

Why not ``model.predict``: at batch 1 Keras/TF spend 0.4–60 ms of framework overhead per call,
which hides the model (a 1k- and a 300k-parameter MLP look alike). LiteRT, the deployment runtime
for small models, runs them in ~1–100 µs, so its timings rank them.

Why a low quantile of many short blocks: the machines flip between a fast and a slow state, so
one long loop (or a median) lands in either; the 10th percentile of per-call times over many
short blocks measures the model in the fast state and repeats within a few percent.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

RUNTIMES = ("litert", "tf")
STATISTICS = ("p10", "median")
_BLOCK_SECONDS = 0.002  # short blocks: each lands in one machine state
_MIN_BLOCKS = 40
_RELATIVE_CI = 0.02  # stop once the statistic's 95% confidence interval is within ±2%


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of one model: quantiles over timed blocks, and what it was measured on."""

    p10_ms: float
    median_ms: float
    p90_ms: float
    iqr_ms: float
    samples: int
    calls_per_block: int
    statistic: str
    ci95_relative: float
    runtime: str
    runtime_version: str
    threads: int
    batch_size: int
    cpu: str
    logical_cores: int
    model_bytes: int | None = None

    @property
    def value_ms(self) -> float:
        """The statistic the objective uses (``p10`` by default; see the module docstring)."""
        return self.p10_ms if self.statistic == "p10" else self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_tflite(model: keras.Model) -> bytes:
    """Convert a Keras model to a LiteRT flatbuffer (float32, batch dimension left dynamic)."""
    import tensorflow as tf

    # Keras prints the exported signature to stdout; keep the console for progress and results.
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def measure_latency(
    model: keras.Model | bytes,
    runtime: str = "litert",
    batch_size: int = 1,
    threads: int = 1,
    statistic: str = "p10",
    max_seconds: float = 1.0,
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
            is within ±2%.

    Example:
        >>> stats = measure_latency(model)  # doctest: +SKIP
        >>> stats.value_ms, stats.median_ms, stats.cpu  # doctest: +SKIP
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}: expected one of {RUNTIMES}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r}: expected one of {STATISTICS}")
    if batch_size < 1 or threads < 1 or max_seconds <= 0:
        raise ValueError(f"batch_size={batch_size}, threads={threads}, max_seconds={max_seconds}: expected positive")
    model_bytes = None
    if runtime == "litert":
        flatbuffer = model if isinstance(model, bytes) else to_tflite(model)
        model_bytes = len(flatbuffer)
        invoke, version = _litert_invoker(flatbuffer, batch_size, threads)
    elif isinstance(model, bytes):
        raise ValueError("runtime='tf' needs a Keras model, not a .tflite flatbuffer")
    else:
        invoke, version = _tf_invoker(model, batch_size, threads)
    per_call, calls = _time_blocks(invoke, max_seconds, statistic)
    p10, p25, median, p75, p90 = np.percentile(per_call, [10, 25, 50, 75, 90]) * 1e3
    return LatencyStats(
        p10_ms=float(p10),
        median_ms=float(median),
        p90_ms=float(p90),
        iqr_ms=float(p75 - p25),
        samples=len(per_call),
        calls_per_block=calls,
        statistic=statistic,
        ci95_relative=_quantile_ci(per_call, 0.1 if statistic == "p10" else 0.5),
        runtime=runtime,
        runtime_version=version,
        threads=threads,
        batch_size=batch_size,
        cpu=cpu_model(),
        logical_cores=os.cpu_count() or 1,
        model_bytes=model_bytes,
    )


def _litert_invoker(flatbuffer: bytes, batch_size: int, threads: int) -> tuple[Callable[[], Any], str]:
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], [batch_size, *detail["shape_signature"][1:]])
    interpreter.allocate_tensors()
    shape = interpreter.get_input_details()[0]["shape"]
    interpreter.set_tensor(detail["index"], np.random.default_rng(0).random(shape, dtype=np.float32))
    return interpreter.invoke, f"ai-edge-litert {ai_edge_litert.__version__}"


def _tf_invoker(model: keras.Model, batch_size: int, threads: int) -> tuple[Callable[[], Any], str]:
    import tensorflow as tf

    _set_tf_threads(threads)
    spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], tf.float32)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    x = tf.constant(np.random.default_rng(0).random(spec.shape, dtype=np.float32))
    return functools.partial(function, x), f"tensorflow {tf.__version__}"


def _set_tf_threads(threads: int) -> None:
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # fixed once TF has started; then keep what it has
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def _time_blocks(invoke: Callable[[], Any], max_seconds: float, statistic: str) -> tuple[np.ndarray, int]:
    """Per-call seconds of many short blocks, until the statistic is tight or time is up."""
    clock = time.perf_counter
    warm_until = clock() + min(0.05, max_seconds / 10)
    calls = 0
    start = clock()
    while clock() < warm_until or calls < 5:
        invoke()
        calls += 1
    per_call_guess = (clock() - start) / calls
    calls_per_block = max(1, round(_BLOCK_SECONDS / per_call_guess))
    q = 0.1 if statistic == "p10" else 0.5
    deadline = clock() + max_seconds
    samples: list[float] = []
    while True:
        start = clock()
        for _ in range(calls_per_block):
            invoke()
        samples.append((clock() - start) / calls_per_block)
        if clock() > deadline:
            break
        if len(samples) >= _MIN_BLOCKS and len(samples) % 10 == 0 and _quantile_ci(samples, q) <= _RELATIVE_CI:
            break
    return np.asarray(samples), calls_per_block


def _quantile_ci(samples: np.ndarray | list[float], q: float) -> float:
    """Half-width of the distribution-free 95% CI of quantile ``q``, relative to the estimate.

    Order statistics at ranks ``nq ± 1.96·sqrt(nq(1-q))`` bound the quantile without assuming a
    distribution (the timings are skewed and bimodal, so mean ± std would mislead).
    """
    ordered = np.sort(np.asarray(samples))
    n = len(ordered)
    spread = 1.96 * math.sqrt(n * q * (1 - q))
    low = ordered[max(0, math.floor(n * q - spread))]
    high = ordered[min(n - 1, math.ceil(n * q + spread))]
    estimate = float(np.quantile(ordered, q))
    return float((high - low) / 2 / estimate) if estimate > 0 else math.inf


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform`` elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()
