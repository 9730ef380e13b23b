"""Is a CNN that contains another always slower in LiteRT? The orders behind ``contains`` (issue 8).

    python benchmarks/containment.py [--bases 15] [--seed 0]

A latency budget rejects a candidate without timing it when it contains a model already timed over
the budget (``tradeoff_search.space._families.contains``): beyond equal operators and wider layers, in
LiteRT a larger kernel, a residual connection more, max pooling instead of a stride of 2 and
extra blocks at the end. Each order is only safe if the larger model is slower every time.

For ``--bases`` random CNNs (1-D on 40 steps and 2-D on 8×8, 1–3 blocks of 8–64 filters, any
activation, kernel, downsampling and residual connection), this makes one pair per order, the
smaller model and the same with that one choice larger (checking that ``contains`` says so),
times both side by side in one process (LiteRT, one thread, batch 1, p10), and prints each
pair's ratio larger / smaller, then per order the minimum, the median and how many were below 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics

import keras
import numpy as np

from tradeoff_search.cost._convert import to_tflite
from tradeoff_search.cost._latency import measure_latencies
from tradeoff_search.space._families import build_model, contains
from tradeoff_search.space._space import Candidate

SHAPES = {"cnn1d": (40, 1), "cnn2d": (8, 8, 1)}


def random_cnn(rng: np.random.Generator, family: str, blocks: int) -> Candidate:
    return Candidate(
        units=(),
        activation=str(rng.choice(["relu", "gelu", "tanh"])),
        dropout=0.0,
        batch_norm=False,
        family=family,
        filters=tuple(_width(rng) for _ in range(blocks)),
        kernel_size=int(rng.choice([3, 5, 7])),
        downsample=str(rng.choice(["max", "stride", "none"])),
        residual=bool(rng.integers(2)),
    )


def _width(rng: np.random.Generator) -> int:
    return int(np.exp(rng.uniform(np.log(8), np.log(64))))


def pairs(rng: np.random.Generator, family: str) -> dict[str, tuple[Candidate, Candidate]]:
    """(smaller, larger) per order, each larger by that one choice."""
    base = random_cnn(rng, family, blocks=int(rng.integers(1, 4)))
    more = _width(rng) // 4  # the same for every block: shortcuts stay projected where they were
    short = random_cnn(rng, family, blocks=int(rng.integers(1, 3)))
    extra = tuple(_width(rng) for _ in range(int(rng.integers(1, 4 - len(short.filters)))))
    extra = (*extra[:-1], max(extra[-1], short.filters[-1]))
    with_ = functools.partial(dataclasses.replace, base)
    return {
        "wider": (base, with_(filters=tuple(width + more for width in base.filters))),
        "kernel": (with_(kernel_size=3), with_(kernel_size=int(rng.choice([5, 7])))),
        "residual": (with_(residual=False), with_(residual=True)),
        "stride -> max": (with_(downsample="stride"), with_(downsample="max")),
        "deeper": (short, dataclasses.replace(short, filters=short.filters + extra)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", type=int, default=15, help="random base CNNs per family")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    ratios: dict[str, list[float]] = {}
    for _ in range(args.bases):
        for family, shape in SHAPES.items():
            for order, (smaller, larger) in pairs(rng, family).items():
                assert contains(larger, smaller, "litert", shape), (order, larger, smaller)
                keras.utils.clear_session()
                files = [to_tflite(build_model(c, shape, 10), signature=False) for c in (smaller, larger)]
                small, large = measure_latencies(files, max_seconds=1.0, reference=False)
                ratio = large.p10_ms / small.p10_ms
                ratios.setdefault(order, []).append(ratio)
                timed = f"{small.p10_ms * 1e3:6.2f} -> {large.p10_ms * 1e3:6.2f} µs"
                print(f"{order:13s} {family} {_describe(smaller)} -> {_describe(larger)}: {timed}, ratio {ratio:.3f}")
    print()
    for order, values in ratios.items():
        print(f"{order:13s} {len(values)} pairs: ratio min {min(values):.3f}, median {statistics.median(values):.3f}, "
              f"below 1: {sum(r < 1 for r in values)}")  # fmt: skip


def _describe(candidate: Candidate) -> str:
    return (
        f"{'x'.join(map(str, candidate.filters))} k{candidate.kernel_size} {candidate.downsample}"
        f"{' res' if candidate.residual else ''} {candidate.activation}"
    )


if __name__ == "__main__":
    main()
