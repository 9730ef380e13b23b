"""Does tradeoff_search find a better accuracy/latency front in the same time than what people use today? (issue 6)

    pip install -e ".[bench]"
    python benchmarks/compare.py [--minutes 7] [--seeds 0 1 2] [--out benchmarks/results/compare]

On MNIST-1D (``studies/mnist1d.toml``: MLPs, 1-D CNNs and GRUs × the optimizer space), four
contenders get the same wall-clock budget, one after the other, each in its own process, on the
same train/validation split (the test split is left to the referee), in the same space:

1. ``tradeoff_search``: ``run_study`` with the spec's defaults (TPE, LiteRT latency, MLflow),
   a timeout instead of a trial count;
2. ``optuna_mlflow``: a hand-written two-objective Optuna study as users write it today (Optuna's
   default sampler, ``model.fit`` with early stopping, latency = median of 20
   ``model.predict(x[:1])``, optuna-integration's ``MLflowCallback``);
3. ``random``: tradeoff_search's objective with random sampling;
4. ``keras_tuner``: Keras Tuner ``RandomSearch`` on validation accuracy (it has no second
   objective); its front is taken afterwards by parameter count.

Each writes the models of the Pareto set it claims. A referee then scores all of them on the
test split and times them side by side in one process (LiteRT, one thread, p10, batch 1 and 32).
Scores per contender: hypervolume of (test error, log10 latency µs) from a fixed reference, also
as a share of the union front's; trials completed; time to 90% of its final hypervolume; share
of the budget spent measuring latency; Spearman of its own latency figures with the referee's.
Printed as a table, written to ``compare.json`` and drawn in ``compare_fronts.png`` in ``--out``.
See benchmarks/README.md for the columns and caveats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _compare_contenders import CONTENDERS
from _compare_scores import REFEREE_REFERENCE, SELF_REFERENCE, mean_scores, plot_fronts, score_seed, table

HERE = Path(__file__).resolve().parent
# A contender is stopped by its own deadline; this only ends one that hangs past it (startup,
# collecting its models and the trial the deadline interrupts fit well within it).
BACKSTOP_SECONDS = 180
REFEREE_TIMEOUT_SECONDS = 1200


def _child(arguments: list[str], cwd: Path, log: Path, timeout: float) -> int | None:
    """Run this script with ``arguments`` in ``cwd``, output to ``log``; its exit code, None if it
    had to be killed."""
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with log.open("w") as output:
        child = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)  # fmt: skip
        try:
            return child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # its own session: the child and what it started
            child.wait()
            return None


def run_seed(out: Path, seed: int, contenders: list[str], minutes: float, spec: Path) -> None:
    """All contenders one after the other, then the referee, for one seed."""
    seed_dir = out / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    for name in contenders:
        run_dir = seed_dir / name
        shutil.rmtree(run_dir, ignore_errors=True)  # a stale Optuna storage would be resumed
        run_dir.mkdir()
        started = time.monotonic()
        arguments = ["--contender", name, "--seed", str(seed), "--minutes", str(minutes), "--spec", str(spec)]
        code = _child(arguments, run_dir, run_dir / "log.txt", minutes * 60 + BACKSTOP_SECONDS)
        result = run_dir / "result.json"
        if code == 0 and result.is_file():
            written = json.loads(result.read_text())
            what = f"{len(written['trials'])} trials, {len(written['front'])} claimed"
        else:
            what = f"FAILED ({'killed' if code is None else f'exit code {code}'}; see {run_dir / 'log.txt'})"
            result.unlink(missing_ok=True)
        print(f"seed {seed} {name:>15}: {what}, {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    code = _child(["--referee", "--seed", str(seed), "--spec", str(spec)], seed_dir, seed_dir / "referee.log",
                  REFEREE_TIMEOUT_SECONDS)  # fmt: skip
    if code != 0:
        raise SystemExit(f"seed {seed}: the referee failed (see {seed_dir / 'referee.log'})")
    print(f"seed {seed} {'referee':>15}: {time.monotonic() - started:.0f} s", flush=True)


def report(out: Path, seeds: list[int], minutes: float | None, spec: Path) -> None:
    """Score every seed, print the tables, write compare.json and compare_fronts.png."""
    order = list(CONTENDERS)
    per_seed = {seed: score_seed(out / f"seed-{seed}") for seed in seeds}
    if minutes is None:  # --rescore: the budget the contenders had
        budgets = {s["budget_seconds"] for scores in per_seed.values() for s in scores["contenders"].values()}
        minutes = budgets.pop() / 60 if len(budgets) == 1 else None
    budget = "" if minutes is None else f"{minutes:g} min per contender; "
    for seed, scores in per_seed.items():
        union = f"b1 {scores['union_hv_b1']:.3f}, b32 {scores['union_hv_b32']:.3f}"
        print(f"\nseed {seed}: {budget}hypervolume of the union of all fronts {union}")
        print(table(scores["contenders"], order))
    settings = {"minutes": minutes, "seeds": seeds, "spec": str(spec), "contenders": order,
                "referee_reference": REFEREE_REFERENCE, "self_reference": SELF_REFERENCE}  # fmt: skip
    document = {"settings": settings, "seeds": {str(seed): scores for seed, scores in per_seed.items()}}
    if len(seeds) > 1:
        document["mean"] = mean_scores(list(per_seed.values()))
        print(f"\nmean ± sd over {len(seeds)} seeds")
        print(table(document["mean"], order))
    (out / "compare.json").write_text(json.dumps(document, indent=2))
    plot_fronts(out, seeds, order, out / "compare_fronts.png")
    print(f"\nwritten {out / 'compare.json'} and {out / 'compare_fronts.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of each contender (default 7)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of everything per seed")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "compare")
    parser.add_argument("--spec", type=Path, default=HERE.parent / "studies" / "mnist1d.toml")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--rescore", action="store_true", help="only score and report the seeds already in --out")
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)  # one contender, in its folder
    parser.add_argument("--referee", action="store_true", help=argparse.SUPPRESS)  # the referee, in a seed's folder
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    spec = args.spec.resolve()
    if args.contender:
        from _compare_contenders import run

        run(args.contender, spec, args.seed, args.minutes)
        return
    if args.referee:
        from _compare_referee import judge

        judge(Path.cwd(), spec)
        return
    out = args.out.resolve()
    if args.rescore:
        seeds = sorted(int(p.parent.name.removeprefix("seed-")) for p in out.glob("seed-*/referee.json"))
        if not seeds:
            raise SystemExit(f"--out {out}: no finished seed (seed-N/referee.json) to score")
        report(out, seeds, None, spec)
        return
    started = time.monotonic()
    for seed in args.seeds:
        run_seed(out, seed, args.contenders, args.minutes, spec)
    report(out, args.seeds, args.minutes, spec)
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
