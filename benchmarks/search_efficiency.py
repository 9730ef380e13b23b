"""Search efficiency at equal wall-clock time: samplers, and multi-objective early stopping (issue 5).

    python benchmarks/search_efficiency.py [--spec studies/digits.toml] [--minutes 2.5]
        [--seeds 0 1 2] [--variants tpe tpe+pruning nsga2 random [gp] [tpe+noredraw]] [--json FILE]
        [--budget-ms B] [--reference-accuracy A]

Each variant runs the spec's study for the same wall-clock budget per seed, one after another
(never in parallel), each in a fresh process with its own Optuna and MLflow stores. From every
study's completed trials and their completion times this computes the hypervolume of
(validation accuracy, log10 latency µs) over time, then per variant: trials finished, trials
pruned, final hypervolume, and the time to reach 95% of the ``tpe`` run's final hypervolume
(same seed; ∞ if never), with ratios to ``tpe``. Every run and the summary go to ``--json``.

By default the reference point is (accuracy 0.8, latency 20 µs), near the front of the default
study, so that differences between searches show; the tool's own default (0, 100 ms) would make
every front's hypervolume nearly the same number.

With ``--budget-ms`` every run has that latency budget, and the budget is the reference latency:
only what meets it counts. The variant ``tpe+noredraw`` is then the baseline of the redrawing
sampler (issue 8): TPE as Optuna makes it, which may propose a family the budget has ruled out.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = (0.8, 0.02)  # accuracy, latency_ms
VARIANTS = ("tpe", "tpe+pruning", "nsga2", "random", "gp", "tpe+noredraw")
DEFAULT_VARIANTS = VARIANTS[:4]


def run_variant(
    spec_path: str, variant: str, seed: int, minutes: float, budget_ms: float | None, reference: tuple[float, float]
) -> dict:
    """Run one study (in this process) and return its hypervolume-over-time record."""
    import optuna

    from tradeoff_search import StudySpec, run_study
    from tradeoff_search.front import Front

    spec = StudySpec.load(spec_path).override(n_trials=100_000, timeout=minutes * 60)
    sampler = variant.split("+")[0]
    spec = dataclasses.replace(
        spec,
        study=dataclasses.replace(spec.study, sampler=sampler, seed=seed, name=f"{variant}-{seed}"),
        training=dataclasses.replace(spec.training, pruning="pruning" in variant),
        latency=dataclasses.replace(spec.latency, budget_ms=budget_ms),
        tracking=dataclasses.replace(spec.tracking, log_models="none"),
    )
    if "noredraw" in variant:  # this process only: the spec's sampler, not wrapped
        from tradeoff_search.study import _open as _open

        make_sampler = _open.make_sampler
        unwrapped = dataclasses.replace(spec, latency=dataclasses.replace(spec.latency, budget_ms=None))
        _open.make_sampler = lambda _: make_sampler(unwrapped)
    with tempfile.TemporaryDirectory() as root:
        study = run_study(spec, storage=f"sqlite:///{root}/optuna.db", tracking_uri=f"sqlite:///{root}/mlflow.db")
    trials = [t for t in study.trials if t.datetime_complete is not None]
    start = min(t.datetime_start for t in trials)
    # One process runs the trials in turn, so trial numbers are in order of completion.
    completed_at = {t.number: (t.datetime_complete - start).total_seconds() for t in trials}
    history = Front.of(study).hypervolume_history(reference)
    curve = [(completed_at[number], value) for number, value in history]
    return {
        "variant": variant,
        "seed": seed,
        "finished": len(curve),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "over_budget": sum(t.user_attrs.get("trained") is False for t in trials),
        "hypervolume": curve[-1][1] if curve else 0.0,
        "curve": curve,
    }


def time_to(curve: list[list[float]], target: float) -> float:
    return next((seconds for seconds, value in curve if value >= target), math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "studies" / "digits.toml"))
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--json", help="write every run and the summary here")
    parser.add_argument("--budget-ms", type=float, help="a latency budget for every run; the reference latency")
    parser.add_argument("--reference-accuracy", type=float, default=REFERENCE[0])
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    reference = (args.reference_accuracy, REFERENCE[1] if args.budget_ms is None else args.budget_ms)
    if args.one:  # a child process: one run, its record on stdout's last line
        variant, seed = args.one[0], int(args.one[1])
        print(json.dumps(run_variant(args.spec, variant, seed, args.minutes, args.budget_ms, reference)))
        return
    if "tpe" not in args.variants:
        parser.error("--variants must include tpe: it is the baseline of the ratios")
    budget = [] if args.budget_ms is None else ["--budget-ms", str(args.budget_ms)]

    runs = []
    for seed in args.seeds:
        for variant in args.variants:
            command = [sys.executable, __file__, "--spec", args.spec, "--minutes", str(args.minutes), *budget,
                       "--reference-accuracy", str(args.reference_accuracy)]  # fmt: skip
            child = subprocess.run([*command, "--one", variant, str(seed)], capture_output=True, text=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=True)  # fmt: skip
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(f"seed {seed} {variant:12} {runs[-1]['finished']:4d} trials, {runs[-1]['pruned']:3d} pruned, "
                  f"{runs[-1]['over_budget']:3d} over budget, hypervolume {runs[-1]['hypervolume']:.4f}",
                  flush=True)  # fmt: skip

    baseline = {r["seed"]: r for r in runs if r["variant"] == "tpe"}
    print(f"\n{args.minutes} min per run, reference (accuracy {reference[0]}, {reference[1] * 1e3:g} µs); "
          "t95 = seconds to reach 95% of the tpe run's final hypervolume (same seed)")  # fmt: skip
    print(f"{'variant':12} {'seed':>4} {'trials':>6} {'pruned':>6} {'HV':>7} {'HV/tpe':>7} {'t95 s':>6} {'t95/tpe':>7}")
    summary = {}
    for variant in args.variants:
        ratios, speedups = [], []
        for run in (r for r in runs if r["variant"] == variant):
            base = baseline[run["seed"]]
            target = 0.95 * base["hypervolume"]
            t95, base_t95 = time_to(run["curve"], target), time_to(base["curve"], target)
            ratios.append(run["hypervolume"] / base["hypervolume"] if base["hypervolume"] else math.nan)
            speedups.append(t95 / base_t95)
            print(f"{variant:12} {run['seed']:>4} {run['finished']:>6} {run['pruned']:>6} {run['hypervolume']:>7.4f} "
                  f"{ratios[-1]:>7.3f} {t95:>6.0f} {speedups[-1]:>7.2f}")  # fmt: skip
        summary[variant] = {"hypervolume_ratio_median": statistics.median(ratios),
                            "t95_ratio_median": statistics.median(speedups)}  # fmt: skip
    print("\nmedian over seeds, vs tpe: " + "; ".join(
        f"{v}: HV ×{s['hypervolume_ratio_median']:.3f}, t95 ×{s['t95_ratio_median']:.2f}" for v, s in summary.items()
    ))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"minutes": args.minutes, "reference": reference, "runs": runs,
                                               "summary": summary}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
