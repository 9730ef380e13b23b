from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tradeoff_search import measure_latency
from tradeoff_search.cost._convert import to_tflite
from tradeoff_search.cost._harness import _MIN_DECISION_BLOCKS
from tradeoff_search.cost._latency import calibrate_reference, cpu_model, measure_latencies
from tradeoff_search.cost._lock import lock_path, machine_lock
from tradeoff_search.space._families import build_model
from tradeoff_search.space._space import Candidate


def _mlp(units: tuple[int, ...]):
    return build_model(Candidate(units=units, activation="relu", dropout=0.0, batch_norm=False), (64,), 10)


@pytest.fixture(scope="module")
def small_and_large():
    small, large = _mlp((14,)), _mlp((1400, 1400))
    assert 900 <= small.count_params() <= 1200
    assert 2_000_000 <= large.count_params() <= 2_200_000
    return to_tflite(small), to_tflite(large)


def test_litert_ranks_a_2m_parameter_mlp_slower_than_a_1k_one(small_and_large) -> None:
    small, large = small_and_large
    fast = measure_latency(small, max_seconds=0.5)
    slow = measure_latency(large, max_seconds=0.5)
    assert slow.value_ms > 5 * fast.value_ms
    assert slow.model_bytes > 1000 * 1024 > fast.model_bytes


def test_statistics_and_fingerprint(small_and_large) -> None:
    # Time enough for the harness's minimum rounds on a loaded machine; a quiet one stops sooner.
    stats = measure_latency(small_and_large[0], batch_size=4, threads=1, statistic="median", max_seconds=2.0)
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.iqr_ms >= 0 and stats.samples >= 40 and stats.calls_per_block >= 1
    assert stats.value_ms == stats.median_ms
    assert stats.runtime == "litert" and stats.runtime_version.startswith("ai-edge-litert ")
    assert stats.batch_size == 4 and stats.threads == 1
    assert stats.cpu == cpu_model() and stats.cpu
    assert stats.logical_cores == os.cpu_count()
    assert set(stats.to_dict()) >= {"p10_ms", "median_ms", "p90_ms", "iqr_ms", "cpu", "runtime", "batch_size"}


def test_tf_runtime_measures_a_keras_model() -> None:
    stats = measure_latency(_mlp((8,)), runtime="tf", max_seconds=0.2)
    assert stats.runtime == "tf" and stats.runtime_version.startswith("tensorflow ")
    assert stats.value_ms > 0 and stats.model_bytes is None


@pytest.mark.parametrize(
    "kwargs",
    [{"runtime": "onnx"}, {"statistic": "mean"}, {"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": True},
     {"threads": 0}, {"max_seconds": float("nan")}],
)  # fmt: skip
def test_bad_arguments(small_and_large, kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        measure_latency(small_and_large[0], **kwargs)


@pytest.mark.parametrize("model", ["model.tflite", None])
def test_a_model_is_keras_or_tflite_bytes(model: object) -> None:
    with pytest.raises(TypeError, match=r"model: expected a Keras model or the bytes of a \.tflite file"):
        measure_latency(model)  # type: ignore[arg-type]


def test_interleaved_reference_and_normalization(small_and_large) -> None:
    stats = measure_latency(small_and_large[1], max_seconds=0.5)
    assert stats.reference_p10_ms is not None and 0 < stats.reference_p10_ms <= stats.reference_median_ms
    assert stats.normalized_ms(stats.reference_p10_ms) == pytest.approx(stats.p10_ms)
    assert stats.normalized_ms(2 * stats.reference_p10_ms) == pytest.approx(2 * stats.p10_ms)
    bare = measure_latency(small_and_large[0], max_seconds=0.2, reference=False)
    assert bare.reference_p10_ms is None and bare.normalized_ms(123.0) == bare.p10_ms


def test_side_by_side_keeps_order_and_ranks(small_and_large) -> None:
    small, large = small_and_large
    stats = measure_latencies([large, small], max_seconds=0.6)
    assert [s.model_bytes for s in stats] == [len(large), len(small)]
    assert stats[0].p10_ms > 5 * stats[1].p10_ms
    assert stats[0].reference_p10_ms == stats[1].reference_p10_ms  # one reference, timed in the same rounds
    calibration = calibrate_reference(max_seconds=0.3)
    assert calibration["p10_ms"] > 0 and calibration["runtime"] == "litert" and calibration["cpu"] == cpu_model()


def test_measuring_waits_while_another_process_trains(small_and_large) -> None:
    holder = _holding_the_lock(shared=True, seconds=1.5)
    start = time.perf_counter()
    measure_latency(small_and_large[0], max_seconds=0.1, reference=False)
    waited = time.perf_counter() - start
    holder.wait(timeout=10)
    assert waited > 1.0  # it timed only once the "training" process let go
    start = time.perf_counter()
    with machine_lock(shared=True), machine_lock(shared=True):  # trainings share it
        pass
    assert time.perf_counter() - start < 0.5


def test_a_model_surely_over_a_budget_stops_timing_early(small_and_large) -> None:
    large = small_and_large[1]
    full = measure_latency(large, max_seconds=2.0)
    # The 2M-parameter MLP is ~50x the reference: surely above 2x at the first check.
    start = time.perf_counter()
    early = measure_latency(large, max_seconds=2.0, stop_above_reference=2.0)
    seconds = time.perf_counter() - start
    assert early.samples < full.samples and early.samples == _MIN_DECISION_BLOCKS
    assert early.value_ms > 2 * early.reference_ms
    assert seconds < 1.0
    # A model under the threshold is timed as usual.
    assert measure_latency(small_and_large[0], max_seconds=2.0, stop_above_reference=2.0).samples >= 40
    with pytest.raises(ValueError, match="stop_above_reference"):
        measure_latency(large, reference=False, stop_above_reference=2.0)


def test_the_reference_flatbuffer_has_the_converted_reference_models_operators() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from tradeoff_search.cost._latency import reference_model
    from tradeoff_search.cost._reference import reference_flatbuffer

    def layout(flatbuffer: bytes) -> list[tuple[str, list[tuple[int, ...]]]]:
        interpreter = Interpreter(model_content=flatbuffer)
        tensors = {t["index"]: tuple(t["shape_signature"]) for t in interpreter.get_tensor_details()}
        return [(op["op_name"], [tensors.get(i, ()) for i in op["inputs"]]) for op in interpreter._get_ops_details()]

    written = reference_flatbuffer()
    assert written == reference_flatbuffer()  # the same bytes every time
    assert layout(written) == layout(to_tflite(reference_model(), signature=False))


def test_the_lock_is_this_users_and_a_long_wait_ends_with_its_name() -> None:
    path = lock_path()
    assert path.parent.stat().st_uid == os.getuid() and path.parent.stat().st_mode & 0o077 == 0
    holder = _holding_the_lock(shared=False, seconds=30)
    try:
        start = time.perf_counter()
        taken = rf"the latency lock {re.escape(str(path))} stayed taken for 0 s"
        with pytest.raises(TimeoutError, match=taken), machine_lock(shared=True, timeout=0.3):
            pass
        assert 0.3 <= time.perf_counter() - start < 2
    finally:
        holder.kill()
        holder.wait()


def _holding_the_lock(shared: bool, seconds: float) -> subprocess.Popen[str]:
    """Another process that holds the machine lock (shared, as training does; or not) for ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time\nfrom tradeoff_search.cost._lock import machine_lock\n"
         f"with machine_lock(shared={shared}):\n    print('holding', flush=True)\n    time.sleep({seconds})\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder
