"""How reproducible is the latency of a model whose weights do not fit in the cache? (issue 8)

    python benchmarks/large_models.py [--processes 3] [--rounds 4]

An MLP of ~10M multiply-adds (64 → 3163 → 3163 → 10: 40 MB of float32 weights) runs at the speed
of memory, which a machine's other tenants share, while the drift reference (26k multiply-adds)
stays in the cache. In each of ``--processes`` independent processes, one after the other:

1. alone: ``measure_latency`` of the large model, ``--rounds`` times (each a fresh interpreter,
   as each trial has): its p10 and the interleaved reference's;
2. side by side: ``measure_latencies`` of the large model, a twin of it (same shape, other
   weights) and a half-size one (~5M multiply-adds), ``--rounds`` times: the ratios large / twin
   and large / half, which is what the front's final re-timing relies on.

Prints the range (max / min) of each over all processes and rounds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

LARGE, HALF = 3163, 2236  # widths of two hidden layers on 64 inputs: ~10.2M and ~5.1M multiply-adds


def measure(rounds: int) -> dict[str, list[float]]:
    """One process: the large model alone, then side by side with its twin and the half-size one."""
    from tradeoff_search import measure_latency
    from tradeoff_search.cost._convert import to_tflite
    from tradeoff_search.cost._latency import measure_latencies
    from tradeoff_search.space._families import build_model
    from tradeoff_search.space._space import Candidate

    def flatbuffer(width: int) -> bytes:
        candidate = Candidate(units=(width, width), activation="relu", dropout=0.0, batch_norm=False)
        return to_tflite(build_model(candidate, (64,), 10), signature=False)

    large, twin, half = flatbuffer(LARGE), flatbuffer(LARGE), flatbuffer(HALF)
    found: dict[str, list[float]] = {"alone_ms": [], "reference_ms": [], "large/twin": [], "large/half": []}
    for _ in range(rounds):
        alone = measure_latency(large)
        found["alone_ms"].append(alone.p10_ms)
        found["reference_ms"].append(alone.reference_p10_ms)
    for _ in range(rounds):
        a, b, c = measure_latencies([large, twin, half])
        found["large/twin"].append(a.p10_ms / b.p10_ms)
        found["large/half"].append(a.p10_ms / c.p10_ms)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.rounds)))
        return
    runs = []
    for _ in range(args.processes):
        done = subprocess.run(
            [sys.executable, __file__, "--measure", "--rounds", str(args.rounds)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.processes} processes × {args.rounds} rounds; per process: values")
    for key in runs[0]:
        values = [v for run in runs for v in run[key]]
        unit = 1e3 if key.endswith("_ms") else 1.0
        shown = " | ".join(" ".join(f"{v * unit:.4g}" for v in run[key]) for run in runs)
        print(f"{key:>12} ({'µs' if unit > 1 else 'ratio'}): {shown}")
        print(f"{'':>12}  range max/min {max(values) / min(values):.2f}")


if __name__ == "__main__":
    main()
