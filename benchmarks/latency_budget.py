"""What an over-budget candidate costs, and whether the sampler learns to avoid them (issue 8).

    python benchmarks/latency_budget.py [--spec studies/digits.toml] [--trials 40] [--budget-ms 0.003] [--seed 0]

Runs a study (the default digits one unless ``--spec``) with ``latency.budget_ms`` set (real
Optuna and MLflow stores in a temporary folder). Over-budget candidates are measured but not
trained; this reports their median wall time as a fraction of trained trials', and the share of
over-budget proposals in the first and second half of the study (the sampler should learn the
infeasible region: lower later). Over-budget candidates are either timed or, when they contain a
model already timed over the budget, recorded without being built; both kinds are counted.

For scale, it then runs the same number of empty trials in a study of the same space and storage:
each only asks the sampler for a candidate and records it as over budget, as a contained trial
does, without building anything. Their median is the floor of any trial in this study.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import tempfile
from pathlib import Path

import optuna

from tradeoff_search import StudySpec, run_study
from tradeoff_search.record._keys import LATENCY_CONSTRAINT
from tradeoff_search.space._space import suggest_architecture, suggest_family, suggest_recipe
from tradeoff_search.stores import make_storage
from tradeoff_search.study._open import make_sampler

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "studies" / "digits.toml"))
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--budget-ms", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=None, help="the sampler's seed (default: the spec's)")
    args = parser.parse_args()
    spec = StudySpec.load(args.spec).override(n_trials=args.trials)
    spec = dataclasses.replace(
        spec,
        latency=dataclasses.replace(spec.latency, budget_ms=args.budget_ms),
        study=dataclasses.replace(spec.study, seed=spec.study.seed if args.seed is None else args.seed),
    )
    with tempfile.TemporaryDirectory() as root:
        study = run_study(spec, storage=f"sqlite:///{root}/optuna.db", tracking_uri=f"sqlite:///{root}/mlflow.db")
        empty = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec),
                                    storage=make_storage(spec, f"sqlite:///{root}/empty.db"))  # fmt: skip
        empty.optimize(functools.partial(_empty_trial, spec=spec), n_trials=args.trials)
    trials = sorted(study.trials, key=lambda t: t.number)
    seconds = {t.number: _seconds(t) for t in trials}
    over = [t.number for t in trials if t.user_attrs.get("trained") is False]
    trained = [t.number for t in trials if t.user_attrs.get("trained") is True]
    half = len(trials) // 2
    first = sum(n < half for n in over) / half
    second = sum(n >= half for n in over) / (len(trials) - half)
    over_s = statistics.median(seconds[n] for n in over) if over else float("nan")
    trained_s = statistics.median(seconds[n] for n in trained) if trained else float("nan")
    print(f"budget {args.budget_ms} ms, {len(trials)} trials: {len(over)} over budget, {len(trained)} trained")
    print(f"median wall time: over-budget {over_s:.2f} s, trained {trained_s:.2f} s, ratio {over_s / trained_s:.1%}")
    floor_s = statistics.median(_seconds(t) for t in empty.trials)
    print(f"floor: an empty trial (proposal and storage only) {floor_s * 1e3:.0f} ms, {floor_s / trained_s:.1%} "
          f"of a trained one; over-budget trials took {sum(seconds[n] for n in over) / sum(seconds.values()):.1%} "
          "of the study's trial time")  # fmt: skip
    by_family: dict[str, list[float]] = {}
    for n in over:
        by_family.setdefault(trials[n].params.get("family", "-"), []).append(seconds[n])
    contained = [n for n in over if "contains_trial" in trials[n].user_attrs]
    timed = [n for n in over if n not in contained]
    print("over budget: " + ", ".join(
        f"{len(group)} {name} ({statistics.median(seconds[n] for n in group):.2f} s)"
        for name, group in (("timed", timed), ("containing a timed one, not built", contained)) if group))  # fmt: skip
    print("over-budget trials: " + ", ".join(_describe(trials[n], seconds[n], spec) for n in over))
    families = sorted(by_family.items())
    print("over budget by family: " + ", ".join(
        f"{family} {len(times)} ({statistics.median(times):.2f} s)" for family, times in families))  # fmt: skip
    print(f"over-budget share of proposals: first half {first:.0%}, second half {second:.0%}")
    print(f"front (feasible only): {[t.number for t in study.best_trials]}; none over budget: "
          f"{not set(over) & {t.number for t in study.best_trials}}")  # fmt: skip


def _empty_trial(trial: optuna.Trial, spec: StudySpec) -> tuple[float, ...]:
    suggest_architecture(trial, spec.model, suggest_family(trial, spec))
    suggest_recipe(trial, spec)
    trial.set_constraint(LATENCY_CONSTRAINT, 1.0)
    trial.set_user_attr("trained", False)
    return (0.0, 1.0)


def _seconds(trial: optuna.trial.FrozenTrial) -> float:
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _describe(trial: optuna.trial.FrozenTrial, seconds: float, spec: StudySpec) -> str:
    """``#7 cnn1d 16x9 k5 max res relu contains #2 (0.04 s)``: the architecture and how it was rejected."""
    candidate = suggest_architecture(optuna.trial.FixedTrial(trial.params), spec.model, trial.params["family"])
    how = f"contains #{trial.user_attrs['contains_trial']}" if "contains_trial" in trial.user_attrs else "timed"
    operators = [f"k{candidate.kernel_size}", candidate.downsample] if candidate.kernel_size else []
    operators += ["res"] if candidate.residual else []
    operators += [candidate.activation] if candidate.family != "gru" else []
    architecture = " ".join([candidate.family, "x".join(map(str, candidate.widths)), *operators])
    return f"#{trial.number} {architecture} {how} ({seconds:.2f} s)"


if __name__ == "__main__":
    main()
