"""Scores, table and figure of compare.py, from the files its contenders and referee wrote.

No TensorFlow here: the orchestrating process stays light, and ``--rescore`` re-reads a finished
output folder in a second.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Referee scores: (test error, log10 of the referee's latency in µs), both minimized. The
# reference point is fixed, so scores compare across contenders, seeds and runs: error 1.0 (a
# model that is always wrong adds nothing) and 10^5 µs = 100 ms per call, tradeoff_search's own
# default reference and far above every model of the mnist1d space (the slowest, 3 conv blocks of
# 64 filters without downsampling, takes a few ms per call at batch 32).
REFEREE_REFERENCE = (1.0, 5.0)
# Self-reported progress: (1 - validation accuracy, log10 of the self-reported cost), where the
# cost is µs for latencies (LiteRT's or model.predict's) and a parameter count for Keras Tuner.
# 10^7 is above every plausible value of both (model.predict takes ~50 ms; the largest model of
# the space has ~0.55M parameters).
SELF_REFERENCE = (1.0, 7.0)
TIME_FRACTION = 0.9  # "time to 90% of the final hypervolume"
BATCHES = (1, 32)


def nondominated(points: Sequence[Sequence[float]], maximise: Sequence[bool]) -> list[bool]:
    """Whether each point is on the front (ties kept: two equal models are both claimed)."""
    import moocore

    if not points:
        return []
    mask = moocore.is_nondominated(np.asarray(points, dtype=float), maximise=list(maximise), keep_weakly=True)
    return [bool(m) for m in mask]


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimized) up to ``reference``; points not
    better than the reference in both coordinates add nothing."""
    import moocore

    kept = [p for p in points if p[0] < reference[0] and p[1] < reference[1]]
    if not kept:
        return 0.0
    return float(moocore.hypervolume(np.asarray(kept, dtype=float), ref=list(reference)))


def as_point(accuracy: float, cost: float) -> tuple[float, float]:
    """(error, log10 cost): the minimized coordinates both scores use. Costs are positive."""
    return 1.0 - accuracy, math.log10(max(cost, 1e-12))


def time_to_fraction(
    moments: Sequence[tuple[float, tuple[float, float]]], reference: tuple[float, float], fraction: float
) -> float | None:
    """First time (s) at which the hypervolume of the points seen so far reaches ``fraction`` of
    the hypervolume of all of them; None without any hypervolume."""
    ordered = sorted(moments, key=lambda m: m[0])
    final = hypervolume([p for _, p in ordered], reference)
    if final <= 0:
        return None
    for i, (moment, _) in enumerate(ordered):
        if hypervolume([p for _, p in ordered[: i + 1]], reference) >= fraction * final:
            return moment
    return None  # not reached: cannot happen, the last prefix is everything


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation; None with fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def self_cost_us(result: dict[str, Any], cost: float) -> float:
    """A self-reported cost in the unit of SELF_REFERENCE: latencies in µs, parameters as they are."""
    return cost * 1e3 if result["cost_kind"].endswith("_ms") else cost


def score_seed(seed_dir: Path) -> dict[str, Any]:
    """Every contender's scores for one seed, from its ``result.json`` and the ``referee.json``."""
    referee = json.loads((seed_dir / "referee.json").read_text())
    judged: dict[str, list[dict[str, Any]]] = referee["models"]
    union = {b: [as_point(m["test_accuracy"], m[f"latency_b{b}_ms"] * 1e3) for ms in judged.values() for m in ms]
             for b in BATCHES}  # fmt: skip
    union_hv = {b: hypervolume(points, REFEREE_REFERENCE) for b, points in union.items()}
    scores: dict[str, Any] = {}
    for result_file in sorted(seed_dir.glob("*/result.json")):
        result = json.loads(result_file.read_text())
        name = result["contender"]
        models = judged.get(name, [])
        row: dict[str, Any] = {
            "trials": len(result["trials"]),
            "failed": result["failed_trials"],
            "claimed": len(result["front"]),
            "missing_models": len(result["missing_models"]),  # claimed, but no model to judge
            "best_test_accuracy": max((m["test_accuracy"] for m in models), default=None),
            "latency_share": result["latency_seconds"] / result["budget_seconds"],
            "overrun_seconds": result["finished_seconds"] - result["budget_seconds"],
        }
        for b in BATCHES:
            points = [as_point(m["test_accuracy"], m[f"latency_b{b}_ms"] * 1e3) for m in models]
            row[f"hv_b{b}"] = hypervolume(points, REFEREE_REFERENCE)
            row[f"hv_b{b}_of_union"] = row[f"hv_b{b}"] / union_hv[b] if union_hv[b] > 0 else None
        seen = [(t["completed_s"], as_point(t["accuracy"], self_cost_us(result, t["cost"]))) for t in result["trials"]]
        row["t90_self_s"] = time_to_fraction(seen, SELF_REFERENCE, TIME_FRACTION)
        on_front = [(m["completed_s"], as_point(m["test_accuracy"], m["latency_b1_ms"] * 1e3)) for m in models]
        row["t90_referee_s"] = time_to_fraction(on_front, REFEREE_REFERENCE, TIME_FRACTION)
        row["spearman_b1"] = spearman([m["cost"] for m in models], [m["latency_b1_ms"] for m in models])
        row["cost_kind"] = result["cost_kind"]
        row["budget_seconds"] = result["budget_seconds"]
        scores[name] = row
    return {"contenders": scores, "union_hv_b1": union_hv[1], "union_hv_b32": union_hv[32]}


COLUMNS = {  # score key → (table header, format)
    "trials": ("trials", "{:d}"),
    "claimed": ("front", "{:d}"),
    "best_test_accuracy": ("best test acc", "{:.3f}"),
    "hv_b1": ("HV b1", "{:.3f}"),
    "hv_b1_of_union": ("b1 of union", "{:.0%}"),
    "hv_b32": ("HV b32", "{:.3f}"),
    "hv_b32_of_union": ("b32 of union", "{:.0%}"),
    "t90_self_s": ("t90 self s", "{:.0f}"),
    "t90_referee_s": ("t90 ref s", "{:.0f}"),
    "latency_share": ("latency time", "{:.1%}"),
    "spearman_b1": ("spearman b1", "{:.2f}"),
}


def table(scores: dict[str, dict[str, Any]], order: Sequence[str]) -> str:
    """The contenders as an aligned text table (blank where a score does not exist)."""
    from tradeoff_search.front._pareto import format_table

    rows = []
    for name in order:
        if name in scores:
            row = {"contender": name}
            for key, (header, form) in COLUMNS.items():
                value, sd = scores[name].get(key), scores[name].get(f"{key}_sd")
                cell = "" if value is None else form.format(value)
                if sd is not None:  # over several seeds: mean ± standard deviation
                    cell += " ±" + form.replace(":d", ":.0f").format(sd)
                row[header] = cell
            rows.append(row)
    return format_table(rows)


def mean_scores(per_seed: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per contender, the mean over seeds of every numeric score (None where no seed has one),
    with the standard deviation under ``KEY_sd`` when there are two seeds or more."""
    names = {name for seed in per_seed for name in seed["contenders"]}
    means: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [seed["contenders"][name] for seed in per_seed if name in seed["contenders"]]
        mean: dict[str, Any] = {"seeds": len(rows)}
        for key in COLUMNS:
            values = [r[key] for r in rows if r.get(key) is not None]
            mean[key] = statistics.fmean(values) if values else None
            if len(values) >= 2:
                mean[f"{key}_sd"] = statistics.stdev(values)
        for key in ("trials", "claimed"):  # counts print as integers
            if mean[key] is not None:
                mean[key] = round(mean[key])
        means[name] = mean
    return means


def plot_fronts(out_dir: Path, seeds: Sequence[int], order: Sequence[str], path: Path) -> None:
    """One row per seed, batch 1 and batch 32 side by side: every claimed model at its referee
    test accuracy and latency, each contender's front drawn as a staircase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    colors = dict(zip(order, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False))
    figure, axes = plt.subplots(len(seeds), len(BATCHES), figsize=(12, 4.6 * len(seeds)), squeeze=False)
    for row, seed in enumerate(seeds):
        judged = json.loads((out_dir / f"seed-{seed}" / "referee.json").read_text())["models"]
        for column, batch in enumerate(BATCHES):
            ax = axes[row][column]
            for name in order:
                models = judged.get(name, [])
                if not models:
                    continue
                latency = [m[f"latency_b{batch}_ms"] * 1e3 for m in models]
                accuracy = [m["test_accuracy"] for m in models]
                front = nondominated(list(zip(accuracy, latency, strict=True)), (True, False))
                color = colors.get(name, "black")
                ax.scatter([x for x, f in zip(latency, front, strict=True) if not f],
                           [y for y, f in zip(accuracy, front, strict=True) if not f],
                           facecolors="none", edgecolors=color, alpha=0.6)  # fmt: skip
                steps = sorted((x, y) for x, y, f in zip(latency, accuracy, front, strict=True) if f)
                ax.step([x for x, _ in steps], [y for _, y in steps], where="post", color=color, marker="o",
                        label=f"{name} ({len(models)} claimed)")  # fmt: skip
            ax.set_xscale("log")
            # Plain numbers (3, 300), not 3×10⁰; minor ticks labelled only where they do not crowd.
            ax.xaxis.set_major_formatter(LogFormatter())
            ax.xaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.5)))
            ax.set_xlabel(f"referee latency, µs per call (LiteRT, 1 thread, p10, batch {batch})")
            ax.set_ylabel("test accuracy (1000 unseen MNIST-1D signals)")
            ax.set_title(f"seed {seed}, batch {batch}: up and left is better")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
