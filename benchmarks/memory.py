"""Does a worker's memory stay flat over a long study? (issue 4: RSS growth ≤ 150 MB over 100 trials)

    python benchmarks/memory.py [--trials 100]

Runs one worker in this process (real Optuna and MLflow stores in a temporary folder) on digits
with a short epoch budget, and records the resident set size after every trial. TensorFlow grows
~5 MB per model built in one process unless its state is reset; the objective clears the Keras
session at the start of every trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from tradeoff_search import StudySpec, run_study

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    spec = StudySpec.load(REPO / "studies" / "digits.toml").override(n_trials=args.trials)
    spec = dataclasses.replace(
        spec,
        training=dataclasses.replace(spec.training, max_epochs=args.epochs),
        tracking=dataclasses.replace(spec.tracking, log_models="none"),
    )
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        run_study(
            spec,
            storage=f"sqlite:///{root}/optuna.db",
            tracking_uri=f"sqlite:///{root}/mlflow.db",
            callbacks=[lambda study, trial: samples.append(rss_mb())],
        )
    warm = samples[min(9, len(samples) - 1)]
    print(f"RSS after trial 1: {samples[0]:.0f} MB, after trial 10: {warm:.0f} MB, after trial {len(samples)}: "
          f"{samples[-1]:.0f} MB, max {max(samples):.0f} MB")  # fmt: skip
    growth = samples[-1] - warm
    print(f"growth from trial 10 to {len(samples)}: {growth:+.0f} MB; from trial 1: {samples[-1] - samples[0]:+.0f} MB")


if __name__ == "__main__":
    main()
