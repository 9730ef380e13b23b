"""What the conversion timeout rests on (issue 25): the converter cannot be interrupted in its
process, the default limit is far above the slowest conversion the bounds allow, and the limit
costs nothing.

    python benchmarks/conversion.py [--skip-largest]

1. **Interrupting it in process.** A thread that ticks every 5 ms runs beside the conversion of an
   8.5M-parameter MLP (64 → 2048 → 2048 → 2048 → 10) in float32, dynamic-range and int8, with and
   without a signature: the longest gap between its ticks is how long the converter holds
   Python's interpreter lock at a stretch, during which no Python code (a signal handler, a
   watchdog thread) of the process runs.
2. **The slowest conversion the bounds allow.** An MLP of ~2.0e8 parameters (64 → 4 × 8192 →
   10: ~3.2 GB to train, under the 4 GB a spec may ask for), converted in float32 and
   dynamic-range without a signature, as a trial times it; its time and the process's peak
   memory. Needs ~16 GB of memory and a few minutes (``--skip-largest`` leaves it out).
3. **The limit's cost.** :func:`~tradeoff_search.process._channel.time_limit` around an empty body
   with a pool's pipe: the two lines a worker writes per conversion.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time

import numpy as np


def _mlp(widths: tuple[int, ...]):  # type: ignore[no-untyped-def]
    import keras

    inputs = keras.Input((64,))
    x = inputs
    for width in widths:
        x = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def lock_held() -> None:
    from tradeoff_search.cost._convert import convert

    model = _mlp((2048, 2048, 2048))
    rows = np.random.default_rng(0).random((50, 64), np.float32)
    convert(model, signature=False)  # the first conversion traces and warms up
    print(f"1. {model.count_params():,} parameters: seconds of conversion, longest stretch without Python")
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        for mode in ("none", "dynamic", "int8"):
            for signature in (False, True):
                ticks.clear()
                start = time.perf_counter()
                convert(model, mode, representative=rows, signature=signature)
                end = time.perf_counter()
                longest = np.diff([start, *ticks, end]).max()
                print(f"   {mode:8s} signature={signature!s:5s}  {end - start:6.2f} s   {longest:5.2f} s")
    finally:
        stop.set()
        ticker.join()


def largest() -> None:
    from tradeoff_search.cost._convert import convert

    model = _mlp((8192, 8192, 8192, 8192))
    print(f"2. {model.count_params():.2e} parameters, no signature:")
    for mode in ("none", "dynamic"):
        start = time.perf_counter()
        flatbuffer = convert(model, mode, signature=False).flatbuffer
        print(f"   {mode:8s} {time.perf_counter() - start:6.1f} s, {len(flatbuffer) / 1e6:.0f} MB")
    print(f"   peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB")


def limit_cost(rounds: int = 20_000) -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.environ["TRADEOFF_SEARCH_STATUS_FD"] = str(write)  # as the pool starts a worker
    from tradeoff_search.process._channel import time_limit

    start = time.perf_counter()
    for done in range(rounds):
        with time_limit(600, "the conversion to LiteRT (int8)"):
            pass
        if done % 100 == 0:  # the pool reads the pipe once a second; keep it from filling
            try:
                while os.read(read, 1 << 16):
                    pass
            except BlockingIOError:
                pass
    print(f"3. time_limit: {(time.perf_counter() - start) / rounds * 1e6:.1f} µs per conversion")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-largest", action="store_true", help="leave out the ~2e8-parameter model")
    args = parser.parse_args()
    lock_held()
    if not args.skip_largest:
        largest()
    limit_cost()


if __name__ == "__main__":
    main()
