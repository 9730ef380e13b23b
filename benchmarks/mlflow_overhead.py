"""MLflow overhead per trial of MLflowParetoCallback, without and with model logging, side by side.

    python benchmarks/mlflow_overhead.py [--trials 60] [--trials-without-models 400]

Trials are real Optuna trials in a real SQLite storage carrying what tradeoff_search records
(params, two objectives, latency statistics, 4 per-epoch curves of 30 epochs); the MLflow store is
a real SQLite store. "With models" includes what logging a model costs end to end: the objective
saving ``model.keras`` and its ``.tflite`` and the callback logging them (Keras flavor).
Timed: the callback (and, with models, the staging), not Optuna's own write of the trial.
Target (issue 3): median ≤ 150 ms without models, ≤ 500 ms with. The run without models is longer,
to show the cost does not grow with the number of runs already in the experiment (trials 2-11 vs
the last 10; random objective values, so ranks below the front keep shifting as in a real study).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from tradeoff_search import MLflowParetoCallback
from tradeoff_search.record._keys import MODEL_DIGESTS_ATTR
from tradeoff_search.space._families import build_model
from tradeoff_search.space._space import Candidate
from tradeoff_search.trial._staging import stage, trial_dir


def _trial(rng: np.random.Generator, digests: dict[str, str] | None) -> optuna.trial.FrozenTrial:
    units = int(rng.integers(8, 512))
    curves = {k: rng.random(30).tolist() for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy")}
    latency = {"p10_ms": 0.002, "median_ms": 0.0021, "p90_ms": 0.003, "iqr_ms": 0.0002, "samples": 200,
               "calls_per_block": 900, "statistic": "p10", "ci95_relative": 0.01, "runtime": "litert",
               "runtime_version": "ai-edge-litert 2.3.0", "threads": 1, "batch_size": 1, "cpu": "x",
               "logical_cores": 2, "model_bytes": 12345}  # fmt: skip
    distributions = {
        "n_layers": optuna.distributions.IntDistribution(1, 3),
        "units_0": optuna.distributions.IntDistribution(8, 512, log=True),
        "learning_rate": optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True),
        "optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"]),
    }
    params = {"n_layers": 1, "units_0": units, "learning_rate": float(rng.uniform(1e-4, 3e-2)), "optimizer": "adam"}
    return optuna.trial.create_trial(
        params=params,
        distributions=distributions,
        values=[float(rng.random()), float(rng.random() * 0.1)],
        user_attrs={
            "n_params": units * 75,
            "latency": latency,
            "history": curves,
            "train_seconds": 3.0,
            "epochs": 30,
            **({MODEL_DIGESTS_ATTR: digests} if digests else {}),
        },
    )


def measure(n_trials: int, with_models: bool, root: Path) -> list[float]:
    rng = np.random.default_rng(0)
    staging = root / "staging"
    study = optuna.create_study(storage=f"sqlite:///{root}/optuna.db", directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms"])
    callback = MLflowParetoCallback(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        experiment="overhead",
        log_models="all" if with_models else "none",
        model_dir=staging,
    )
    candidate = Candidate(units=(64,), activation="relu", dropout=0.0, batch_norm=False)
    model = build_model(candidate, (64,), 10)
    seconds = []
    for number in range(n_trials):
        start = time.perf_counter()
        digests = None
        if with_models:  # as the objective stages a model (stage_model), for a trial not yet added
            digests = stage(trial_dir(staging, number), model)
        staged = time.perf_counter() - start
        study.add_trial(_trial(rng, digests))  # Optuna's write, and the frozen trial Optuna hands its callbacks
        trial = study.get_trials(deepcopy=False)[-1]
        start = time.perf_counter()
        callback(study, trial)
        seconds.append(staged + time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60, help="trials with model logging")
    parser.add_argument("--trials-without-models", type=int, default=400)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for with_models, n_trials in ((False, args.trials_without_models), (True, args.trials)):
        with tempfile.TemporaryDirectory() as root:
            seconds = measure(n_trials, with_models, Path(root))
        steady = seconds[1:]  # the first call pays imports and table creation
        label = "with models   " if with_models else "without models"
        print(
            f"{label}: median {statistics.median(steady) * 1e3:6.1f} ms, "
            f"p90 {np.percentile(steady, 90) * 1e3:6.1f} ms, "
            f"trials 2-11 median {statistics.median(seconds[1:11]) * 1e3:6.1f} ms, "
            f"last 10 median {statistics.median(seconds[-10:]) * 1e3:6.1f} ms, first call {seconds[0]:.2f} s "
            f"({n_trials} trials)"
        )


if __name__ == "__main__":
    main()
