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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search._lock import machine_lock

if TYPE_CHECKING:
    import keras

_logger = logging.getLogger(__name__)

RUNTIMES = ("litert", "tf")
STATISTICS = ("p10", "median")
_BLOCK_SECONDS = 0.002  # short blocks: each lands in one machine state
_MIN_BLOCKS = 40
_MIN_DECISION_BLOCKS = 5  # "surely above" needs no tight estimate: decided from the 5th round on
_DECISION_WARM_SECONDS = 0.01  # a low quantile of the blocks that follow leaves out the cold ones
_RELATIVE_CI = 0.02  # stop once the statistic's 95% confidence interval is within ±2%


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of one model: quantiles over timed blocks, and what it was measured on.

    ``reference_*`` are the same statistics of a fixed reference model timed in blocks
    interleaved with this model's: machine drift (fast and slow states, other processes) moves
    both alike, so :meth:`normalized_ms` makes measurements from different trials, processes and
    workers comparable.
    """

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
    reference_p10_ms: float | None = None
    reference_median_ms: float | None = None

    @property
    def value_ms(self) -> float:
        """The raw statistic the objective uses (``p10`` by default; see the module docstring)."""
        return self.p10_ms if self.statistic == "p10" else self.median_ms

    @property
    def reference_ms(self) -> float | None:
        return self.reference_p10_ms if self.statistic == "p10" else self.reference_median_ms

    def normalized_ms(self, calibration_ms: float) -> float:
        """The statistic in units of a calibration of the reference model: ``value / reference ×
        calibration``. Without an interleaved reference, the raw value."""
        reference = self.reference_ms
        return self.value_ms if reference is None else self.value_ms / reference * calibration_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_tflite(model: keras.Model, signature: bool = True) -> bytes:
    """Convert a Keras model to a LiteRT flatbuffer (float32, batch dimension left dynamic).

    Args:
        model: the model.
        signature: keep a ``serving_default`` signature, as a file to deploy needs. Timing does
            not: ``signature=False`` converts the traced inference function, which the converter
            freezes itself: the same operators in a sixth of the time (0.08 vs 0.5 s for a
            17k-parameter MLP), because ``from_keras_model`` first writes and reloads a SavedModel.
    """
    import tensorflow as tf

    if not signature:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        infer = tf.function(tf.autograph.experimental.do_not_convert(lambda x: model(x, training=False)))
        with _absl_errors_only():  # it calls this graph path deprecated; we want it for speed
            return tf.lite.TFLiteConverter.from_concrete_functions([infer.get_concrete_function(spec)]).convert()
    # Keras prints the exported signature to stdout; keep the console for progress and results.
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


@contextlib.contextmanager
def _absl_errors_only() -> Iterator[None]:
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def reference_model() -> keras.Model:
    """The fixed drift reference: an MLP 64 → 128 → 128 → 10 (~26k multiply-adds), the same in
    every process and on every machine (its weights do not change its latency)."""
    from tradeoff_search._models import build_model
    from tradeoff_search._space import Candidate

    candidate = Candidate(units=(128, 128), activation="relu", dropout=0.0, batch_norm=False, optimizer="adam",
                          learning_rate=1e-3, schedule="constant", batch_size=32)  # fmt: skip
    return build_model(candidate, (64,), 10)


@functools.cache
def _reference(runtime: str) -> keras.Model | bytes:
    model = reference_model()
    return to_tflite(model, signature=False) if runtime == "litert" else model


def measure_latency(
    model: keras.Model | bytes,
    runtime: str = "litert",
    batch_size: int = 1,
    threads: int = 1,
    statistic: str = "p10",
    max_seconds: float = 1.0,
    reference: bool = True,
    stop_above_reference: float | None = None,
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
        reference: also time :func:`reference_model` in interleaved blocks, for drift control.
        stop_above_reference: stop timing as soon as the model's statistic is, at 95% confidence,
            above this multiple of the reference's (how a latency budget rejects a model without
            timing it precisely: from the 5th round of blocks, after a 10 ms warm-up instead of
            50 ms). Needs ``reference``.

    Example:
        >>> stats = measure_latency(model)  # doctest: +SKIP
        >>> stats.value_ms, stats.median_ms, stats.cpu  # doctest: +SKIP
    """
    return measure_latencies(
        [model], runtime, batch_size, threads, statistic, max_seconds, reference, stop_above_reference
    )[0]


def measure_latencies(
    models: Sequence[keras.Model | bytes],
    runtime: str = "litert",
    batch_size: int = 1,
    threads: int = 1,
    statistic: str = "p10",
    max_seconds: float = 1.0,
    reference: bool = True,
    stop_above_reference: float | None = None,
) -> list[LatencyStats]:
    """:func:`measure_latency` for several models at once, timed side by side: one short block of
    each in turn, round after round, so that all see the same machine states. With
    ``stop_above_reference``, timing stops once every model is surely above that multiple of the
    reference."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}: expected one of {RUNTIMES}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r}: expected one of {STATISTICS}")
    for name, value in {"batch_size": batch_size, "threads": threads}.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: expected an integer >= 1")
    if not max_seconds > 0 or not math.isfinite(max_seconds):
        raise ValueError(f"max_seconds={max_seconds!r}: expected a finite number > 0")
    for model in models:
        if not isinstance(model, bytes) and not hasattr(model, "input_shape"):
            raise TypeError(f"model: expected a Keras model or the bytes of a .tflite file, got {type(model).__name__}")
    if stop_above_reference is not None and not reference:
        raise ValueError(f"stop_above_reference={stop_above_reference}: needs reference=True")
    timed = [*models, _reference(runtime)] if reference else list(models)
    invokers, sizes = [], []
    for model in timed:
        if runtime == "litert":
            flatbuffer = model if isinstance(model, bytes) else to_tflite(model, signature=False)
            sizes.append(len(flatbuffer))
            invoke, version = _litert_invoker(flatbuffer, batch_size, threads)
        elif isinstance(model, bytes):
            raise ValueError("runtime='tf' needs a Keras model, not a .tflite flatbuffer")
        else:
            sizes.append(None)
            invoke, version = _tf_invoker(model, batch_size, threads)
        invokers.append(invoke)
    q = 0.1 if statistic == "p10" else 0.5
    with machine_lock(shared=False):  # no worker on this machine trains while we time
        timings = _time_interleaved(invokers, max_seconds, q, stop_above_reference)
    reference_timing = timings.pop() if reference else None
    results = []
    for (per_call, calls), size in zip(timings, sizes[: len(timings)], strict=True):
        p10, p25, median, p75, p90 = np.percentile(per_call, [10, 25, 50, 75, 90]) * 1e3
        results.append(
            LatencyStats(
                p10_ms=float(p10),
                median_ms=float(median),
                p90_ms=float(p90),
                iqr_ms=float(p75 - p25),
                samples=len(per_call),
                calls_per_block=calls,
                statistic=statistic,
                ci95_relative=_quantile_ci(per_call, q),
                runtime=runtime,
                runtime_version=version,
                threads=threads,
                batch_size=batch_size,
                cpu=cpu_model(),
                logical_cores=os.cpu_count() or 1,
                model_bytes=size,
                reference_p10_ms=None
                if reference_timing is None
                else float(np.percentile(reference_timing[0], 10) * 1e3),
                reference_median_ms=None if reference_timing is None else float(np.median(reference_timing[0]) * 1e3),
            )
        )
    return results


def calibrate_reference(
    runtime: str = "litert", batch_size: int = 1, threads: int = 1, max_seconds: float = 2.0
) -> dict[str, Any]:
    """The reference model's latency, measured alone: what :meth:`LatencyStats.normalized_ms`
    scales to. A study stores one and every trial, process and worker uses it."""
    stats = measure_latencies([_reference(runtime)], runtime, batch_size, threads, "p10", max_seconds, False)[0]
    return {"p10_ms": stats.p10_ms, "median_ms": stats.median_ms, "runtime": runtime, "batch_size": batch_size,
            "threads": threads, "cpu": stats.cpu}  # fmt: skip


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


def _calls_per_block(invoke: Callable[[], Any], warm_seconds: float) -> int:
    """Warm ``invoke`` up, then size a block to last about ``_BLOCK_SECONDS``."""
    clock = time.perf_counter
    calls = 0
    start = clock()
    while clock() - start < warm_seconds or calls < 5:
        invoke()
        calls += 1
    return max(1, round(_BLOCK_SECONDS / ((clock() - start) / calls)))


def _time_interleaved(
    invokers: Sequence[Callable[[], Any]], max_seconds: float, q: float, stop_above_last: float | None = None
) -> list[tuple[np.ndarray, int]]:
    """Per-call seconds of each invoker, one short block of each per round, until every
    invoker's quantile ``q`` is tight, or (``stop_above_last``) every other invoker's quantile is
    surely above that multiple of the last one's, or time is up."""
    clock = time.perf_counter
    warm = (_DECISION_WARM_SECONDS if stop_above_last is not None else min(0.05, max_seconds / 10)) / len(invokers)
    sizes = [_calls_per_block(invoke, warm) for invoke in invokers]
    samples: list[list[float]] = [[] for _ in invokers]
    deadline = clock() + max_seconds
    rounds = 0
    while True:
        for invoke, calls, timings in zip(invokers, sizes, samples, strict=True):
            start = clock()
            for _ in range(calls):
                invoke()
            timings.append((clock() - start) / calls)
        rounds += 1
        if clock() > deadline:
            break
        if stop_above_last is not None and rounds >= _MIN_DECISION_BLOCKS:
            last_high = _quantile_bounds(samples[-1], q)[1]
            if all(_quantile_bounds(t, q)[0] > stop_above_last * last_high for t in samples[:-1]):
                break
        if rounds % 10 == 0 and rounds >= _MIN_BLOCKS and all(_quantile_ci(t, q) <= _RELATIVE_CI for t in samples):
            break
    return [(np.asarray(t), calls) for t, calls in zip(samples, sizes, strict=True)]


def _quantile_ci(samples: np.ndarray | list[float], q: float) -> float:
    """Half-width of the distribution-free 95% CI of quantile ``q``, relative to the estimate.

    Order statistics at ranks ``nq ± 1.96·sqrt(nq(1-q))`` bound the quantile without assuming a
    distribution (the timings are skewed and bimodal, so mean ± std would mislead).
    """
    low, high = _quantile_bounds(samples, q)
    estimate = float(np.quantile(samples, q))
    return (high - low) / 2 / estimate if estimate > 0 else math.inf


def _quantile_bounds(samples: np.ndarray | list[float], q: float) -> tuple[float, float]:
    """The distribution-free 95% confidence interval of quantile ``q`` (see :func:`_quantile_ci`)."""
    ordered = np.sort(np.asarray(samples))
    n = len(ordered)
    spread = 1.96 * math.sqrt(n * q * (1 - q))
    return float(ordered[max(0, math.floor(n * q - spread))]), float(ordered[min(n - 1, math.ceil(n * q + spread))])


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform`` elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()
