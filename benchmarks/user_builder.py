"""Your own builder against a built-in family at equal wall time (issue 20).

    python benchmarks/user_builder.py [--minutes 5] [--seeds 0 1] [--json FILE]

Per seed, two MNIST-1D studies run one after another, each in a fresh process with its own
stores and the same wall-clock budget: the shipped user builder (``studies/mnist1d_separable.toml``,
a depthwise-separable 1-D CNN in ``studies/mnist1d_separable.py``) and the built-in ``cnn1d``
family (``studies/mnist1d.toml`` searching ``cnn1d`` only). Both have the same optimizer space,
training and latency settings, and TPE with the same seed. Per run: trials finished, the
hypervolume of (validation accuracy, log10 latency µs) above the reference point, and the front's
most accurate model: its validation accuracy, its test accuracy (MNIST-1D's 1000 test signals,
which the search never saw, scored by ``select_model``) and its latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = (0.5, 0.01)  # accuracy, latency_ms (10 µs): MNIST-1D fronts sit at 1-3 µs, 55-93%
VARIANTS = {"separable_cnn": "mnist1d_separable.toml", "cnn1d": "mnist1d.toml"}


def run_variant(variant: str, seed: int, minutes: float) -> dict:
    """Run one study in this process (in a temporary folder) and return its record."""
    import optuna

    from tradeoff_search import StudySpec, run_study, select_model
    from tradeoff_search.front import Front
    from tradeoff_search.rules import Categorical

    spec = StudySpec.load(REPO / "studies" / VARIANTS[variant]).override(n_trials=100_000, timeout=minutes * 60)
    model = spec.model if variant != "cnn1d" else dataclasses.replace(spec.model, families=Categorical(("cnn1d",)))
    spec = dataclasses.replace(
        spec, model=model, study=dataclasses.replace(spec.study, seed=seed, name=f"{variant}-{seed}")
    )
    with tempfile.TemporaryDirectory() as root:
        os.chdir(root)  # the stores and the staging folder of logged models
        tracking = f"sqlite:///{root}/mlflow.db"
        study = run_study(spec, storage=f"sqlite:///{root}/optuna.db", tracking_uri=tracking)
        best = select_model(spec, study, Path(root) / "best", rule="max_latency", max_latency_ms=1e9,
                            tracking_uri=tracking)  # fmt: skip
    history = Front.of(study).hypervolume_history(REFERENCE)
    return {
        "variant": variant,
        "seed": seed,
        "finished": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
        "hypervolume": history[-1][1] if history else 0.0,
        "best_trial": best.trial,
        "best_validation_accuracy": best.validation_accuracy,
        "best_test_accuracy": best.test_accuracy,
        "best_latency_us": best.latency_ms * 1e3,
        "best_params": study.trials[best.trial].params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of each study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", help="write every run here")
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one run, its record on stdout's last line
        print(json.dumps(run_variant(args.one[0], int(args.one[1]), args.minutes)))
        return
    runs = []
    for seed in args.seeds:
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--minutes", str(args.minutes), "--one", variant, str(seed)]
            child = subprocess.run(command, capture_output=True, text=True, check=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"MNIST-1D, {args.minutes} min per study; hypervolume above (accuracy {REFERENCE[0]}, "
          f"{REFERENCE[1] * 1e3:g} µs); best = the front's most accurate model")  # fmt: skip
    print(f"{'family':14} {'seed':>4} {'trials':>6} {'HV':>7} {'best val':>8} {'best test':>9} {'its µs':>7}")
    for run in runs:
        print(f"{run['variant']:14} {run['seed']:>4} {run['finished']:>6} {run['hypervolume']:>7.4f} "
              f"{run['best_validation_accuracy']:>8.4f} {run['best_test_accuracy']:>9.4f} "
              f"{run['best_latency_us']:>7.2f}")  # fmt: skip
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        print(f"median {variant}: HV {statistics.median(r['hypervolume'] for r in mine):.4f}, best test "
              f"{statistics.median(r['best_test_accuracy'] for r in mine):.4f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({"minutes": args.minutes, "reference": REFERENCE, "runs": runs}, indent=1)
        )


if __name__ == "__main__":
    main()
