"""Report a finished study: its front on the held-out test split, and what latency measurement adds.

    python benchmarks/front_report.py studies/mnist1d.toml [--storage URL] [--tracking-uri URI]

For every Pareto-optimal trial, the model logged in MLflow (``log_models = "pareto"``) is loaded
and scored on the test split, which the search never saw. Then, over all completed trials,
Spearman rank correlations of measured latency with parameter count and with multiply-adds
(per family too): where they fall short of 1, the measurement tells what the proxies do not.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per model is enough

import mlflow.keras
import numpy as np
import optuna
from mlflow import MlflowClient
from scipy.stats import spearmanr

from tradeoff_search import StudySpec, load_dataset
from tradeoff_search.front import Front
from tradeoff_search.stores import DEFAULT_STORAGE, DEFAULT_TRACKING_URI
from tradeoff_search.trial._training import predict_classes, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--storage", default=DEFAULT_STORAGE)
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    spec = StudySpec.load(args.spec)
    study = optuna.load_study(study_name=spec.study.name, storage=args.storage)
    data = load_dataset(spec)
    client = MlflowClient(args.tracking_uri)
    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment)

    rows = []
    for trial in Front.of(study).best_trials:
        runs = client.search_runs([experiment.experiment_id], f"tags.`optuna.trial` = '{trial.number}'")
        test = None
        if runs and any(a.path == "model" for a in client.list_artifacts(runs[0].info.run_id)):
            model = mlflow.keras.load_model(f"runs:/{runs[0].info.run_id}/model")
            test = score(spec.objectives.accuracy, data.y_test, predict_classes(model, data.x_test))
        rows.append({"trial": trial.number, "family": trial.params.get("family", "mlp"), "val": trial.values[0],
                     "test": test, "latency_us": trial.values[1] * 1e3, "params": trial.user_attrs["n_params"],
                     "macs": trial.user_attrs.get("macs")})  # fmt: skip
    print(f"Pareto front of {spec.study.name!r} ({len(study.trials)} trials), test split never seen by the search:")
    print(f"{'trial':>5} {'family':>6} {'val acc':>8} {'test acc':>8} {'latency µs':>10} {'params':>8} {'MACs':>9}")
    for r in rows:
        test = f"{r['test']:.3f}" if r["test"] is not None else "-"
        print(f"{r['trial']:>5} {r['family']:>6} {r['val']:>8.3f} {test:>8} {r['latency_us']:>10.2f} "
              f"{r['params']:>8} {r['macs']:>9}")  # fmt: skip
    scored = [r for r in rows if r["test"] is not None]
    if scored:
        best = max(scored, key=lambda r: r["test"])
        where = f"{best['family']}, trial {best['trial']}, {best['latency_us']:.2f} µs"
        print(f"best test accuracy: {best['test']:.3f} ({where})")
        for level in (0.68, 0.90):
            fast = [r for r in scored if r["test"] >= level]
            if fast:
                f = min(fast, key=lambda r: r["latency_us"])
                print(f"fastest with test accuracy >= {level}: {f['latency_us']:.2f} µs ({f['family']}, trial "
                      f"{f['trial']}, test {f['test']:.3f})")  # fmt: skip

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "macs" in t.user_attrs]
    groups: dict[str, list] = defaultdict(list)
    for trial in complete:
        groups["all"].append(trial)
        groups[trial.params.get("family", "mlp")].append(trial)
    correlations = {}
    print("Spearman of measured latency with:      params    MACs   (trials)")
    for name, trials in groups.items():
        latency = np.array([t.values[1] for t in trials])
        params = np.array([t.user_attrs["n_params"] for t in trials])
        macs = np.array([t.user_attrs["macs"] for t in trials])
        if len(trials) < 3:
            continue
        correlations[name] = {"params": float(spearmanr(latency, params).statistic),
                              "macs": float(spearmanr(latency, macs).statistic), "trials": len(trials)}  # fmt: skip
        c = correlations[name]
        print(f"  {name:>36}: {c['params']:7.3f} {c['macs']:7.3f}   ({c['trials']})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"front": rows, "spearman": correlations}, out, indent=2)


if __name__ == "__main__":
    main()
