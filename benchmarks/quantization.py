"""Searching quantization against float-only at equal wall time, judged on the test split (issues 21, 34).

    XDG_RUNTIME_DIR=$(mktemp -d) nice python benchmarks/quantization.py [--tasks mnist1d mnist1d32 digits32]
        [--seeds 0 1 2] [--minutes 3] [--modes none dynamic int8] [--mode-effects] [--json FILE]

For each task and seed, two studies run for the same wall time, one after the other, each in a
fresh process with its own stores: ``float`` (``quantization = "none"``) and ``searched``
(``quantization = --modes``: each training scored in every mode, each its own trial). Then one
referee pass, in this process:

- every front model of both studies is scored on the test split that neither saw, as the
  ``.tflite`` its study exported to MLflow (quantized where its trial was), by the LiteRT
  interpreter, and all those files are timed side by side (LiteRT, one thread, batch 1, p10,
  the drift reference interleaved);
- per study: the hypervolume of (test accuracy, log10 µs) from the task's reference point (one
  for both studies, moocore), the latency of the fastest model at or above 0.90 test accuracy,
  trainings, trainings per minute and trials, and what TPE did with the mode: the trainings it
  proposed in each mode, in its random start-up (the first 10) and after, and how each mode's
  variants ended (COMPLETE, or PRUNED: not worth converting after training);
- with ``--mode-effects``, every front model's float Keras model is also converted in each mode
  (``float16``, ``dynamic``, ``int8``) and scored on the test split and timed in the same rounds:
  the accuracy drop from float32 to each mode (median and worst over the front models) and each
  mode's speed-up.

``mnist1d32`` and ``digits32`` are MNIST-1D and digits timed at batch 32 (``[latency] batch_size =
32``): their float fronts reach models of 5 µs a call and more, where integer kernels can pay.
Digits trains in about a second, as long as the tool's own work on a training (conversion, timing,
records): the hardest case for a cost per training.

MNIST-1D searches MLPs and 1-D CNNs (GRUs left out: 2–4 s to convert, 25 µs and up, never on its
front; at a few minutes per study they would eat the time).

The two designs of issue 21 (the mode a searched parameter, one per training, against one
training scored in every mode) were compared with this script's ``--compare designs`` at commit
b6aa9d0 (branch ``quant-designs``); the README has the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = {"mnist1d": REPO / "studies" / "mnist1d.toml", "mnist1d32": REPO / "studies" / "mnist1d.toml",
         "digits": REPO / "studies" / "digits.toml", "digits32": REPO / "studies" / "digits.toml"}  # fmt: skip
BATCH = {"digits32": 32, "mnist1d32": 32}  # rows per timed call, else 1
# Hypervolume reference (test accuracy, latency ms), near each task's fronts so differences show.
REFERENCES = {"mnist1d": (0.5, 0.05), "mnist1d32": (0.5, 2.0), "digits": (0.8, 0.02), "digits32": (0.8, 1.0)}
STARTUP = 10  # trainings TPE samples at random first
MODES = ("float16", "dynamic", "int8")
TARGET_ACCURACY = 0.90
SECONDS_PER_MODEL = 0.5


def run_study_once(task: str, seed: int, variant: str, modes: list[str], minutes: float, root: Path) -> dict:
    """One study in this process; its front trials' exported files are copied to ``root``."""
    import optuna
    from mlflow import MlflowClient

    from tradeoff_search import StudySpec, run_study
    from tradeoff_search.front import Front
    from tradeoff_search.rules import Categorical
    from tradeoff_search.tracking._run_index import TAG_STUDY, TAG_TRIAL

    spec = StudySpec.load(TASKS[task]).override(n_trials=100_000, timeout=minutes * 60)
    quantization = ("none",) if variant == "float" else tuple(modes)
    model = spec.model
    if task.startswith("mnist1d"):
        model = dataclasses.replace(model, families=Categorical(("mlp", "cnn1d")))
    spec = dataclasses.replace(
        spec,
        study=dataclasses.replace(spec.study, seed=seed, name=f"{task}-{variant}-{seed}"),
        latency=dataclasses.replace(
            spec.latency, quantization=Categorical(quantization), batch_size=Categorical((BATCH.get(task, 1),))
        ),
        model=model,
        tracking=dataclasses.replace(spec.tracking, log_models="pareto"),
    )
    uri = f"sqlite:///{root}/mlflow.db"
    start = time.perf_counter()
    study = run_study(spec, storage=f"sqlite:///{root}/optuna.db", tracking_uri=uri)
    seconds = time.perf_counter() - start
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(spec.tracking.experiment)
    front = []
    for trial in Front.of(study).best_trials:
        (run,) = client.search_runs(
            [experiment.experiment_id],
            f"tags.`{TAG_STUDY}` = '{study.study_name}' and tags.`{TAG_TRIAL}` = '{trial.number}'",
        )
        folder = root / f"trial-{trial.number}"
        folder.mkdir()
        client.download_artifacts(run.info.run_id, "tflite", str(folder))
        client.download_artifacts(run.info.run_id, "model", str(folder))
        front.append({"trial": trial.number, "quantization": trial.params.get("quantization", "none"),
                      "validation_accuracy": trial.values[0], "latency_ms": trial.values[1],
                      "accuracy_float": trial.user_attrs.get("accuracy_float"),
                      "variant_of": trial.user_attrs.get("variant_of"),
                      "tflite": str(folder / "tflite" / "model.tflite"), "keras": str(folder / "model")})  # fmt: skip
    states = [t.state for t in study.trials]
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trained = [t for t in study.trials if t.state in done and t.user_attrs.get("trained", False)
               and "variant_of" not in t.user_attrs]  # fmt: skip
    return {"task": task, "seed": seed, "variant": variant, "front": front, "seconds": seconds,
            "complete": states.count(optuna.trial.TrialState.COMPLETE),
            "failed": states.count(optuna.trial.TrialState.FAIL),
            "trainings": len(trained), "trainings_per_minute": len(trained) / seconds * 60,
            "train_seconds": sum(t.user_attrs.get("train_seconds", 0.0) for t in trained),
            "tpe_modes": mode_counts(study.trials)}  # fmt: skip


def mode_counts(trials: list) -> dict:
    """What TPE did with the mode: the trainings it proposed per mode, in its random start-up and
    after, and per mode how its variants ended (COMPLETE, PRUNED, FAIL)."""
    proposed = [t for t in trials if "variant_of" not in t.user_attrs]
    variants = [t for t in trials if "variant_of" in t.user_attrs]

    def modes(chosen: list) -> dict[str, int]:
        found = [t.params.get("quantization", "none") for t in chosen]
        return {mode: found.count(mode) for mode in sorted(set(found))}

    ended = {}
    for mode in sorted({t.params["quantization"] for t in variants}):
        states = [t.state.name for t in variants if t.params["quantization"] == mode]
        ended[mode] = {state: states.count(state) for state in sorted(set(states))}
    return {"startup": modes(proposed[:STARTUP]), "after_startup": modes(proposed[STARTUP:]), "variants": ended}


def referee(task: str, runs: list[dict], mode_effects: bool) -> dict:
    """Score and time every front model of ``runs`` (one task, one seed) side by side, and (with
    ``mode_effects``) each one's float Keras model converted in every mode."""
    import mlflow.keras
    import optuna

    from tradeoff_search import StudySpec, load_dataset
    from tradeoff_search.cost._convert import ConversionError, convert_as_shipped
    from tradeoff_search.cost._latency import measure_latencies
    from tradeoff_search.front._pareto import hypervolume
    from tradeoff_search.trial._training import predict_classes, score, tflite_classes

    spec = StudySpec.load(TASKS[task])
    data = load_dataset(spec)
    flatbuffers: list[bytes] = []
    for run in runs:
        for model in run["front"]:
            shipped = Path(model["tflite"]).read_bytes()
            model["test_accuracy"] = score("accuracy", data.y_test, tflite_classes(shipped, data.x_test))
            model["timed"] = len(flatbuffers)
            flatbuffers.append(shipped)
            model["modes"] = {}
            if not mode_effects:
                continue
            keras_model = mlflow.keras.load_model(model["keras"])
            model["test_accuracy_float"] = score("accuracy", data.y_test, predict_classes(keras_model, data.x_test))
            for mode in ("none", *MODES):
                try:
                    converted = convert_as_shipped(keras_model, mode, spec, data.x_train).flatbuffer
                except ConversionError as error:
                    model["modes"][mode] = {"error": str(error)}
                    continue
                model["modes"][mode] = {"test_accuracy": score("accuracy", data.y_test,
                                                               tflite_classes(converted, data.x_test)),
                                        "timed": len(flatbuffers), "bytes": len(converted)}  # fmt: skip
                flatbuffers.append(converted)
    stats = measure_latencies(flatbuffers, batch_size=BATCH.get(task, 1),
                              max_seconds=max(10.0, SECONDS_PER_MODEL * len(flatbuffers)))  # fmt: skip
    latencies = [s.p10_ms for s in stats]
    directions = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    for run in runs:
        points = []
        for model in run["front"]:
            model["test_latency_ms"] = latencies[model.pop("timed")]
            for measured in model["modes"].values():
                if "timed" in measured:
                    measured["latency_ms"] = latencies[measured.pop("timed")]
            points.append((model["test_accuracy"], model["test_latency_ms"]))
        run["hypervolume"] = hypervolume(points, directions, ["accuracy", "latency_ms"], REFERENCES[task])
        good = [latency for accuracy, latency in points if accuracy >= TARGET_ACCURACY]
        run["fastest_at_target_ms"] = min(good) if good else None
    return {"task": task, "runs": runs, "reference": REFERENCES[task], "reference_p10_ms": stats[0].reference_p10_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=["mnist1d", "mnist1d32", "digits32"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--modes", nargs="+", default=["none", "dynamic", "int8"])
    parser.add_argument("--mode-effects", action="store_true", help="also each front model in every mode")
    parser.add_argument("--json", help="write every run and the summary here")
    parser.add_argument("--summarize", metavar="JSON", help="only summarize the results of an earlier --json")
    parser.add_argument("--one", nargs=4, metavar=("TASK", "SEED", "VARIANT", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one study, its record on stdout's last line
        task, seed, variant, root = args.one
        print(json.dumps(run_study_once(task, int(seed), variant, args.modes, args.minutes, Path(root))))
        return
    if args.summarize:
        results = json.loads(Path(args.summarize).read_text())["results"]
        print(json.dumps(summarize(results), indent=1))
        return
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for task in args.tasks:
            for seed in args.seeds:
                by_variant = {}
                # Which goes first alternates seed after seed: a machine getting busier or quieter weighs on both.
                for variant in ("float", "searched") if seed % 2 == 0 else ("searched", "float"):
                    root = Path(scratch) / f"{task}-{seed}-{variant}"
                    root.mkdir()
                    command = [sys.executable, __file__, "--minutes", str(args.minutes), "--modes", *args.modes,
                               "--one", task, str(seed), variant, str(root)]  # fmt: skip
                    child = subprocess.run(command, capture_output=True, text=True, check=True,
                                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
                    by_variant[variant] = json.loads(child.stdout.strip().splitlines()[-1])
                judged = referee(task, [by_variant["float"], by_variant["searched"]], args.mode_effects)
                results.append(judged)
                for run in judged["runs"]:
                    fastest = run["fastest_at_target_ms"]
                    shown = f"{fastest * 1e3:.2f} µs" if fastest is not None else "none"
                    modes = counts([m["quantization"] for m in run["front"]])
                    print(f"{task} seed {seed} {run['variant']:8} {run['trainings']:3d} trainings "
                          f"({run['trainings_per_minute']:.1f}/min, {run['train_seconds']:.0f} of "
                          f"{run['seconds']:.0f} s training), {run['complete']:3d} trials "
                          f"({run['failed']} fail), front {len(run['front'])} ({modes}), "
                          f"test HV {run['hypervolume']:.4f}, fastest >= {TARGET_ACCURACY}: {shown}; "
                          f"TPE {run['tpe_modes']}; load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    summary = summarize(results)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summary": summary}, indent=1))


def counts(modes: list[str]) -> str:
    return ", ".join(f"{mode} {modes.count(mode)}" for mode in sorted(set(modes)))


def summarize(results: list[dict]) -> dict:
    """Per task: the searched study's hypervolume over the float one's per seed, each study's
    fastest model at the target, trainings and trials, and per mode the test accuracy drop and the
    speed-up over the float32 file, over all front models."""
    summary: dict = {}
    for task in dict.fromkeys(r["task"] for r in results):
        seeds = [r for r in results if r["task"] == task]
        ratios, pace, studies = [], [], []
        for judged in seeds:
            first, second = judged["runs"]
            ratios.append(second["hypervolume"] / first["hypervolume"] if first["hypervolume"] else math.nan)
            pace.append(second["trainings_per_minute"] / first["trainings_per_minute"])
            studies.append({run["variant"]: {"fastest_at_target_us": _us(run["fastest_at_target_ms"]),
                                             "trainings": run.get("trainings"), "trials": run["complete"],
                                             # the tool's own seconds per training: all but training
                                             "other_seconds_per_training":
                                                 (run["seconds"] - run["train_seconds"]) / max(run["trainings"], 1),
                                             "hypervolume": run["hypervolume"], "tpe_modes": run.get("tpe_modes")}
                            for run in judged["runs"]})  # fmt: skip
        models = [m for judged in seeds for run in judged["runs"] for m in run["front"]]
        summary[task] = {"hypervolume_ratio_per_seed": ratios, "trainings_per_minute_ratio_per_seed": pace,
                         "studies_per_seed": studies,
                         "modes": {mode: _mode_effect(models, mode) for mode in MODES}}  # fmt: skip
    return summary


def _mode_effect(models: list[dict], mode: str) -> dict:
    """Over ``models``: the test accuracy drop from float32 to ``mode``, its speed-up and file size."""
    drops, speedups, sizes, errors = [], [], [], 0
    for model in models:
        base, measured = model["modes"].get("none", {}), model["modes"].get(mode, {})
        if "error" in measured or "latency_ms" not in base:
            errors += "error" in measured
            continue
        drops.append(base["test_accuracy"] - measured["test_accuracy"])
        speedups.append(base["latency_ms"] / measured["latency_ms"])
        sizes.append(measured["bytes"] / base["bytes"])
    return {"models": len(drops), "refused": errors,
            "accuracy_drop_median": statistics.median(drops) if drops else None,
            "accuracy_drop_worst": max(drops) if drops else None,
            "speedup_median": statistics.median(speedups) if speedups else None,
            "speedup_range": [min(speedups), max(speedups)] if speedups else None,
            "size_ratio_median": statistics.median(sizes) if sizes else None}  # fmt: skip


def _us(ms: float | None) -> float | None:
    return None if ms is None else ms * 1e3


if __name__ == "__main__":
    main()
