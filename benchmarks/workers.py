"""Trials per minute with 1 vs 2 workers on this machine, same study, side by side (issue 4).

    python benchmarks/workers.py [--trials 16] [--epochs 10]

Runs ``python -m tradeoff_search run --workers N`` on the digits spec (fresh stores in a temporary
folder for each N), one after the other, and reports the wall time and trials per minute.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _digits import short_digits_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    text = short_digits_spec(args.epochs)
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as root:
            (Path(root) / "digits.toml").write_text(text)
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tradeoff_search", "run", "digits.toml", "--n-trials", str(args.trials),
                 "--workers", str(workers), "--no-progress"],
                cwd=root, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            seconds = time.perf_counter() - start
        rates[workers] = args.trials / seconds * 60
        print(f"{workers} worker(s): {args.trials} trials in {seconds:.0f} s: {rates[workers]:.1f} trials/min")
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
