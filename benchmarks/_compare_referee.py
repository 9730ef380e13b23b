"""The referee of compare.py: every contender's claimed models, judged by one harness in one process.

No contender's own numbers are used: each ``.keras`` model is scored on the test split that no
contender saw, converted to LiteRT, and all of them are timed side by side with
``measure_latencies`` (LiteRT, one thread, p10 of per-call times over many short interleaved
blocks, the drift reference among them), at batch 1 and at batch 32.
"""

from __future__ import annotations

import json
from pathlib import Path

from _compare_scores import BATCHES

from tradeoff_search import StudySpec, load_dataset

SECONDS_PER_MODEL = 1.0  # timing cap per batch size: every model gets its share of every round
MIN_SECONDS = 10.0


def judge(seed_dir: Path, spec_path: Path) -> None:
    """Write ``seed_dir/referee.json``: per contender, its claimed models with test accuracy and
    p10 latency (ms per call) at each batch size, plus what the contender said about them."""
    import keras

    from tradeoff_search.cost._convert import to_tflite
    from tradeoff_search.cost._latency import cpu_model, measure_latencies
    from tradeoff_search.trial._training import predict_classes, score

    spec = StudySpec.load(spec_path)
    data = load_dataset(spec)
    entries, flatbuffers = [], []
    for result_file in sorted(seed_dir.glob("*/result.json")):
        result = json.loads(result_file.read_text())
        for claimed in result["front"]:
            model = keras.models.load_model(result_file.parent / claimed["model"], compile=False)
            test = score(spec.objectives.accuracy, data.y_test, predict_classes(model, data.x_test))
            entries.append({"contender": result["contender"], **claimed, "test_accuracy": test,
                            "params": model.count_params()})  # fmt: skip
            flatbuffers.append(to_tflite(model))
    seconds = max(MIN_SECONDS, SECONDS_PER_MODEL * len(flatbuffers))
    for batch in BATCHES:
        if not flatbuffers:
            break
        stats = measure_latencies(flatbuffers, runtime="litert", batch_size=batch, threads=1, statistic="p10",
                                  max_seconds=seconds)  # fmt: skip
        for entry, measured in zip(entries, stats, strict=True):
            entry[f"latency_b{batch}_ms"] = measured.p10_ms
            entry[f"latency_b{batch}"] = {"median_ms": measured.median_ms, "samples": measured.samples,
                                          "ci95_relative": measured.ci95_relative,
                                          "reference_p10_ms": measured.reference_p10_ms}  # fmt: skip
    models: dict[str, list[dict]] = {}
    for entry in entries:
        models.setdefault(entry.pop("contender"), []).append(entry)
    harness = {"runtime": "litert", "threads": 1, "statistic": "p10", "batches": list(BATCHES),
               "max_seconds": seconds, "cpu": cpu_model()}  # fmt: skip
    (seed_dir / "referee.json").write_text(json.dumps({"harness": harness, "models": models}, indent=2))
