"""Can the latency harness be trusted across processes and under load? (issue 8 acceptance)

    python benchmarks/latency_harness.py [--out benchmarks/results/latency_harness.json]

1. Reproducibility: 12 MLPs from ~5k to ~10M multiply-adds (neighbours ~2× apart) are measured
   with ``measure_latency`` (defaults: LiteRT, one thread, batch 1, p10, interleaved drift
   reference) in two independent processes, one after the other; Spearman rank correlation and
   median |relative difference|, of the raw p10 and of ``latency_ms`` as trials report it
   (normalized by the reference: candidate/reference ratio × one calibration shared by the study).
2. Under load: the same, while a third process trains a Keras model on the other core (each
   process pinned to its own core).
3. Harness overhead: ``measure_latency`` of a near-empty model vs the best per-call time of a raw
   ``interpreter.invoke()`` loop, as a ratio.

Targets: Spearman ≥ 0.95, median |rel. diff| ≤ 5% (≤ 10% under load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Two hidden layers of width w on 64 inputs, 10 outputs: MACs = 64w + w² + 10w.
TARGET_MACS = [5_000 * 2**k for k in range(12)]  # 5k … 10.2M


def width_for(macs: int) -> int:
    return max(1, round((-74 + (74**2 + 4 * macs) ** 0.5) / 2))


def measure_all(out: Path, core: int | None) -> None:
    """One independent process: build, convert and measure every model once, as trials do."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    from tradeoff_search import measure_latency
    from tradeoff_search.cost._convert import to_tflite
    from tradeoff_search.space._families import build_model
    from tradeoff_search.space._space import Candidate

    results = []
    for macs in TARGET_MACS:
        width = width_for(macs)
        candidate = Candidate(units=(width, width), activation="relu", dropout=0.0, batch_norm=False)
        stats = measure_latency(to_tflite(build_model(candidate, (64,), 10)))
        results.append({"width": width, "macs": 64 * width + width * width + 10 * width, **stats.to_dict()})
    out.write_text(json.dumps(results))


def harness_overhead(out: Path) -> None:
    """measure_latency on a near-empty model vs a raw invoke() loop's p10 per-call time."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from tradeoff_search import measure_latency
    from tradeoff_search.cost._convert import to_tflite

    inputs = keras.Input((1,))
    flatbuffer = to_tflite(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    invoke = interpreter.invoke
    for _ in range(10_000):
        invoke()
    raw = []
    for _ in range(300):
        start = time.perf_counter()
        for _ in range(1000):
            invoke()
        raw.append((time.perf_counter() - start) / 1000)
    harness = measure_latency(flatbuffer).p10_ms
    raw_p10 = float(np.percentile(raw, 10) * 1e3)
    out.write_text(json.dumps({"harness_p10_ms": harness, "raw_loop_p10_ms": raw_p10, "ratio": harness / raw_p10}))


def latency_ms(result: dict, calibration_ms: float) -> float:
    """What a trial reports: p10 relative to the interleaved reference, times the study's calibration."""
    return result["p10_ms"] / result["reference_p10_ms"] * calibration_ms


def compare(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    relative = np.abs(x - y) / ((x + y) / 2)
    return {
        "spearman": float(spearmanr(x, y).statistic),
        "median_abs_rel_diff": float(np.median(relative)),
        "max_abs_rel_diff": float(relative.max()),
    }


def run_pair(tmp: Path, label: str, with_load: bool) -> tuple[list[dict], list[dict]]:
    trainer = None
    if with_load:
        code = (
            "import os; os.sched_setaffinity(0, {1}); import numpy as np, keras\n"
            "x = np.random.rand(4096, 64).astype('float32'); y = np.random.randint(0, 10, 4096)\n"
            "m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512, activation='relu'),"
            " keras.layers.Dense(10, activation='softmax')])\n"
            "m.compile('adam', 'sparse_categorical_crossentropy')\n"
            "while True: m.fit(x, y, epochs=1, batch_size=64, verbose=0)\n"
        )
        trainer = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
        time.sleep(8)  # let it reach steady training
    try:
        results = []
        for i in "ab":
            out = tmp / f"{label}_{i}.json"
            subprocess.run(
                [sys.executable, __file__, "--measure", str(out), "--core", "0"], check=True, stderr=subprocess.DEVNULL
            )
            results.append(json.loads(out.read_text()))
        return results[0], results[1]
    finally:
        if trainer is not None:
            trainer.kill()
            trainer.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_harness.json"))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--overhead", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_all(args.measure, args.core)
        return
    if args.overhead:
        harness_overhead(args.overhead)
        return
    tmp = args.out.parent
    tmp.mkdir(parents=True, exist_ok=True)
    report: dict = {"macs": [64 * w + w * w + 10 * w for w in map(width_for, TARGET_MACS)]}
    calibration_ms = None
    for label, with_load in (("idle", False), ("loaded", True)):
        a, b = run_pair(tmp, label, with_load)
        # One calibration for everything, as a study stores one: the first process's reference.
        calibration_ms = calibration_ms or float(np.median([r["reference_p10_ms"] for r in a]))
        raw = [np.array([r["p10_ms"] for r in run]) for run in (a, b)]
        normalized = [np.array([latency_ms(r, calibration_ms) for r in run]) for run in (a, b)]
        report[label] = {
            "raw": {"a_ms": raw[0].tolist(), "b_ms": raw[1].tolist(), **compare(*raw)},
            "latency_ms": {"a_ms": normalized[0].tolist(), "b_ms": normalized[1].tolist(), **compare(*normalized)},
        }
        for kind in ("raw", "latency_ms"):
            r = report[label][kind]
            print(
                f"{label:6s} {kind:10s}: spearman {r['spearman']:.3f}, "
                f"median |rel diff| {r['median_abs_rel_diff']:.1%}, max {r['max_abs_rel_diff']:.1%}"
            )
    overhead = tmp / "overhead.json"
    subprocess.run([sys.executable, __file__, "--overhead", str(overhead)], check=True, stderr=subprocess.DEVNULL)
    report["overhead"] = json.loads(overhead.read_text())
    print(
        f"overhead: harness p10 {report['overhead']['harness_p10_ms'] * 1e3:.3f} µs vs raw invoke loop "
        f"{report['overhead']['raw_loop_p10_ms'] * 1e3:.3f} µs: ratio {report['overhead']['ratio']:.2f}"
    )
    print("per model (MACs: idle latency_ms a / b, in µs):")
    idle = report["idle"]["latency_ms"]
    for macs, x, y in zip(report["macs"], idle["a_ms"], idle["b_ms"], strict=True):
        print(f"  {macs:>10,d}: {x * 1e3:9.2f} / {y * 1e3:9.2f}")
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
