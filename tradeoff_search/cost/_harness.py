"""The timing harness: interleaved short blocks, robust quantiles, the machine's fingerprint.

It imports only the standard library and numpy (LiteRT when a flatbuffer is timed), never
TensorFlow, Keras, MLflow or Optuna: ``device serve`` runs it on boards that have only Python,
``numpy`` and ``ai-edge-litert``.

Why a low quantile of many short blocks: the machines flip between a fast and a slow state, so
one long loop (or a median) lands in either; the 10th percentile of per-call times over many
short blocks measures the model in the fast state and repeats within a few percent.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

STATISTICS = ("p10", "median")
_BLOCK_SECONDS = 0.002  # short blocks: each lands in one machine state
_MIN_BLOCKS = 40
_MIN_DECISION_BLOCKS = 5  # "surely above" needs no tight estimate: decided from the 5th round on
_DECISION_WARM_SECONDS = 0.01  # a low quantile of the blocks that follow leaves out the cold ones
_RELATIVE_CI = 0.02  # stop once the statistic's 95% confidence interval is within ±2%
LOCAL = "local"


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of one model: quantiles over timed blocks, and what it was measured on.

    ``reference_*`` are the same statistics of a fixed reference model timed in blocks
    interleaved with this model's: machine drift (fast and slow states, other processes) moves
    both alike, so :meth:`normalized_ms` makes measurements from different trials, processes and
    workers comparable. ``device`` is ``"local"`` or the URL of the latency server that timed it
    (``cpu``, ``logical_cores`` and ``runtime_version`` are then that device's).
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
    device: str = LOCAL

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


@dataclass(frozen=True)
class Setting:
    """How to time: what every latency backend takes beside the ``.tflite`` bytes.

    Args:
        batch_size: rows per call.
        threads: intra-op threads of the runtime (LiteRT's ``benchmark_model --num_threads``).
        statistic: what :attr:`LatencyStats.value_ms` reports, ``"p10"`` or ``"median"``.
        max_seconds: time cap; timing stops earlier once the statistic's 95% confidence interval
            is within ±2% (for the reference too).
        reference: also time the reference model in interleaved blocks, for drift control.
        stop_above_reference: stop as soon as every model's statistic is, at 95% confidence,
            above this multiple of the reference's (the early stop of a latency budget).
    """

    batch_size: int = 1
    threads: int = 1
    statistic: str = "p10"
    max_seconds: float = 1.0
    reference: bool = True
    stop_above_reference: float | None = None

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic={self.statistic!r}: expected one of {STATISTICS}")
        for name in ("batch_size", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an integer >= 1")
        if not (isinstance(self.max_seconds, int | float) and self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ValueError(f"max_seconds={self.max_seconds!r}: expected a finite number > 0")
        stop = self.stop_above_reference
        if stop is not None:
            if not self.reference:
                raise ValueError(f"stop_above_reference={stop}: needs reference=True")
            if not (isinstance(stop, int | float) and stop > 0 and math.isfinite(stop)):
                raise ValueError(f"stop_above_reference={stop!r}: expected a finite number > 0")


def time_invokers(
    invokers: Sequence[Callable[[], Any]], sizes: Sequence[int | None], setting: Setting, runtime: str, version: str
) -> list[LatencyStats]:
    """Time ``invokers`` side by side (the last is the reference when ``setting.reference``) and
    summarize each of the others as :class:`LatencyStats` of this machine."""
    q = 0.1 if setting.statistic == "p10" else 0.5
    stop = setting.stop_above_reference if setting.reference else None
    timings = _time_interleaved(invokers, setting.max_seconds, q, stop)
    reference = timings.pop()[0] if setting.reference else None
    results = []
    for (per_call, calls), size in zip(timings, sizes, strict=True):
        p10, p25, median, p75, p90 = np.percentile(per_call, [10, 25, 50, 75, 90]) * 1e3
        results.append(
            LatencyStats(
                p10_ms=float(p10),
                median_ms=float(median),
                p90_ms=float(p90),
                iqr_ms=float(p75 - p25),
                samples=len(per_call),
                calls_per_block=calls,
                statistic=setting.statistic,
                ci95_relative=_quantile_ci(per_call, q),
                runtime=runtime,
                runtime_version=version,
                threads=setting.threads,
                batch_size=setting.batch_size,
                cpu=cpu_model(),
                logical_cores=os.cpu_count() or 1,
                model_bytes=size,
                reference_p10_ms=None if reference is None else float(np.percentile(reference, 10) * 1e3),
                reference_median_ms=None if reference is None else float(np.median(reference) * 1e3),
            )
        )
    return results


def time_flatbuffers(
    flatbuffers: Sequence[bytes],
    setting: Setting,
    while_timing: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    max_tensor_bytes: int | None = None,
) -> list[LatencyStats]:
    """Time LiteRT flatbuffers side by side on this machine, with the reference model of
    :func:`reference_flatbuffer` interleaved when ``setting.reference``. The interpreters are
    loaded first; only the timing runs within ``while_timing()`` (what the caller holds
    meanwhile: the local backend, this machine's latency lock). With ``max_tensor_bytes``, models
    whose tensors at ``setting.batch_size`` would together need more are a ``ValueError``, raised
    before any tensor is allocated (a latency server's bound on what a request may ask for)."""
    from tradeoff_search.cost._reference import reference_flatbuffer

    timed = [*flatbuffers, reference_flatbuffer()] if setting.reference else list(flatbuffers)
    interpreters = [litert_interpreter(flatbuffer, setting.batch_size, setting.threads) for flatbuffer in timed]
    if max_tensor_bytes is not None:
        needed = sum(tensor_bytes(interpreter, setting.batch_size) for interpreter in interpreters)
        if needed > max_tensor_bytes:
            raise ValueError(f"its tensors need {needed / 2**20:,.0f} MB at batch_size={setting.batch_size}, more than "
                             f"the {max_tensor_bytes / 2**20:,.0f} MB this device allows")  # fmt: skip
    invokers = [_allocated_invoker(interpreter) for interpreter in interpreters]
    with while_timing():
        return time_invokers(invokers, [len(f) for f in flatbuffers], setting, "litert", litert_version())


def litert_interpreter(flatbuffer: bytes, batch_size: int, threads: int) -> Any:
    """A LiteRT interpreter of ``flatbuffer``, its single input resized to ``batch_size`` rows,
    its tensors not yet allocated. A flatbuffer LiteRT cannot load, or with other than one input,
    is a ``ValueError``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    details = interpreter.get_input_details()
    if len(details) != 1:
        raise ValueError(f"expected a model with one input tensor, got {len(details)}")
    (detail,) = details
    interpreter.resize_tensor_input(detail["index"], [batch_size, *detail["shape_signature"][1:]])
    return interpreter


def tensor_bytes(interpreter: Any, batch_size: int) -> int:
    """What an interpreter's tensors would take if all were allocated at once at ``batch_size``
    (their declared shapes, a leading 1 or -1 counted as the batch): an upper bound LiteRT's
    arena stays below, known before it allocates anything, plus the float64 draft of the input."""
    total = 0
    for detail in interpreter.get_tensor_details():
        dims = [int(d) for d in detail["shape_signature"]] or [int(d) for d in detail["shape"]]
        if dims and dims[0] in (-1, 1):
            dims[0] = batch_size
        total += math.prod(max(d, 1) for d in dims) * np.dtype(detail["dtype"]).itemsize
    (detail,) = interpreter.get_input_details()
    return total + 8 * batch_size * math.prod(max(int(d), 1) for d in detail["shape_signature"][1:])


def _allocated_invoker(interpreter: Any) -> Callable[[], Any]:
    """The interpreter's ``invoke``, its tensors allocated and its input fixed random data."""
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], _random_input(np.dtype(detail["dtype"]), detail["shape"]))
    return interpreter.invoke


def _random_input(dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """Fixed random data of the input's type (float, or integer for fully quantized models)."""
    rng = np.random.default_rng(0)
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    raise ValueError(f"expected a float or integer input tensor, got {dtype.name}")


def litert_version() -> str:
    import ai_edge_litert

    return f"ai-edge-litert {ai_edge_litert.__version__}"


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
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ARM boards may only say
    ``Hardware``/``Model``; ``platform`` elsewhere)."""
    names: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            names.setdefault(key.strip(), value.strip())
    for key in ("model name", "Model", "Hardware"):
        if names.get(key):
            return names[key]
    return platform.processor() or platform.machine()
