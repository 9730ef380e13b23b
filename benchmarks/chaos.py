"""Three ``run`` commands on one study, workers killed with SIGKILL: is the study still exact? (issue 24)

    python benchmarks/chaos.py [--storage postgresql://USER:PASSWORD@HOST/EMPTY_DB] [--trials 30]
        [--kill-every 20] [--kill-for 120] [--epochs 10]

Starts three ``python -m tradeoff_search run --workers 1`` commands on one study within one
second, on fresh stores in a temporary folder (SQLite for Optuna unless ``--storage`` names a
PostgreSQL database; SQLite for MLflow), the shortened digits spec. Every ``--kill-every``
seconds for ``--kill-for`` seconds from the first worker's start it SIGKILLs one worker process of the three (the
kernel's out-of-memory killer's signal), noting the trial it held. At the end it checks and
prints: exactly ``n_trials`` COMPLETE trials; every FAIL trial failed by a kill and retried once
with its parameters; every killed trial FAIL; one MLflow child run per trial and one parent run;
the ``pareto`` tags equal to Optuna's own front (``study.best_trials``); every command's exit
code (0, as documented). It exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from _digits import short_digits_spec
from memory import children
from mlflow import MlflowClient

from tradeoff_search.record._keys import FAIL_REASON, WORKER_ATTR
from tradeoff_search.stores import redact
from tradeoff_search.tracking._run_index import TAG_ROLE, TAG_TRIAL


def workers_of(runs: list[subprocess.Popen[bytes]]) -> list[int]:
    """The live worker processes of the runs."""
    found = []
    for run in runs:
        for pid in children(run.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"tradeoff_search.study._worker" in command:
                found.append(pid)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="an Optuna storage URL (default: a fresh SQLite file)")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--kill-every", type=float, default=20)
    parser.add_argument("--kill-for", type=float, default=120)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="which worker each kill picks")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pick = random.Random(args.seed)
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as root:
        spec = short_digits_spec(args.epochs).replace('name = "digits"', f'name = "{name}"')
        (Path(root) / "spec.toml").write_text(spec.replace("n_trials = 30", f"n_trials = {args.trials}"))
        storage = args.storage or f"sqlite:///{root}/optuna.db"
        tracking = f"sqlite:///{root}/mlflow.db"
        command = [sys.executable, "-m", "tradeoff_search", "run", "spec.toml", "--workers", "1", "--no-progress",
                   "--storage", storage, "--tracking-uri", tracking]  # fmt: skip
        print(f"study {name}: {args.trials} trials, Optuna {redact(storage)}, MLflow {tracking}")
        runs = []
        for number in range(3):
            with open(Path(root) / f"run{number}.out", "wb") as out:
                runs.append(subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT))
            time.sleep(0.4)  # three starts within one second
        started = time.monotonic()
        while not workers_of(runs) and any(run.poll() is None for run in runs):
            time.sleep(0.5)
        first_worker = time.monotonic()  # the kills' window starts with the first worker
        kills: list[tuple[int, int | None]] = []  # (worker pid, the trial it held)
        study = None
        while any(run.poll() is None for run in runs):
            time.sleep(args.kill_every)
            if time.monotonic() - first_worker > args.kill_for:
                break
            live = workers_of(runs)
            if not live:
                continue
            victim = pick.choice(live)
            try:
                study = study or optuna.load_study(study_name=name, storage=storage)
                held = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                        if t.system_attrs.get(WORKER_ATTR, "").endswith(f":{victim}")]  # fmt: skip
            except KeyError:  # the study is not created yet
                held = []
            subprocess.run(["kill", "-KILL", str(victim)], check=False)
            kills.append((victim, held[0] if held else None))
            print(f"{time.monotonic() - started:5.0f} s: SIGKILL worker {victim} (trial {held[0] if held else '-'})")
        codes = [run.wait() for run in runs]
        wall = time.monotonic() - started
        outputs = [(Path(root) / f"run{number}.out").read_text(errors="replace") for number in range(3)]
        study = optuna.load_study(study_name=name, storage=storage)
        client = MlflowClient(tracking)
        experiment = client.get_experiment_by_name(name)
        runs_logged = client.search_runs([experiment.experiment_id], max_results=5000) if experiment else []
    state = optuna.trial.TrialState
    complete = study.get_trials(states=(state.COMPLETE,))
    failed = study.get_trials(states=(state.FAIL,))
    retried = 0
    for trial in failed:
        # Its retry: the trial whose retry history ends with it (a retry killed in turn is retried too).
        retries = [t for t in study.trials if t.system_attrs.get("retry_history", [])[-1:] == [trial.number]]
        if len(retries) == 1 and retries[0].params.items() >= trial.params.items():
            retried += 1
        else:
            print(f"trial {trial.number} ({len(trial.params)} parameters, {trial.user_attrs.get(FAIL_REASON)}): "
                  f"retries {[(t.number, t.state.name, len(t.params)) for t in retries]}")  # fmt: skip
    killed_trials = [number for _, number in kills if number is not None]
    killed_failed = sum(study.trials[n].state == state.FAIL for n in killed_trials)
    by_kill = sum("SIGKILL" in str(t.user_attrs.get(FAIL_REASON, "")) for t in failed)
    children_runs = [r for r in runs_logged if r.data.tags.get(TAG_ROLE) == "trial"]
    parents = [r for r in runs_logged if r.data.tags.get(TAG_ROLE) == "study"]
    per_trial = sorted(int(r.data.tags[TAG_TRIAL]) for r in children_runs)
    tagged = {int(r.data.tags[TAG_TRIAL]) for r in children_runs if r.data.tags.get("pareto") == "true"}
    front = {t.number for t in study.best_trials}
    said = sum(line.count("ended abnormally (SIGKILL)") for line in outputs)
    print(f"{wall:.0f} s; {len(kills)} kills, {len(killed_trials)} of them mid-trial; console lines about them: {said}")
    print(f"trials: {len(study.trials)}; COMPLETE {len(complete)} of n_trials {args.trials}; "
          f"FAIL {len(failed)} ({by_kill} by SIGKILL), retried once with their parameters: {retried}; "
          f"killed trials now FAIL: {killed_failed} of {len(killed_trials)}")  # fmt: skip
    print(f"MLflow: {len(parents)} parent run(s), {len(children_runs)} child runs for {len(study.trials)} trials "
          f"(one per trial: {per_trial == [t.number for t in study.trials]})")  # fmt: skip
    print(f"Pareto tags {sorted(tagged)} vs Optuna's front {sorted(front)}: {'equal' if tagged == front else 'DIFFER'}")
    print(f"exit codes {codes}")
    checks = [
        len(complete) == args.trials,
        retried == len(failed),
        killed_failed == len(killed_trials),
        len(parents) == 1 and per_trial == [t.number for t in study.trials],
        tagged == front,
        codes == [0, 0, 0],
    ]
    print("all checks hold" if all(checks) else f"FAILED checks: {[i for i, ok in enumerate(checks) if not ok]}")
    if not all(checks):
        for number, output in enumerate(outputs):
            print(f"--- run {number} (last lines)\n" + "\n".join(output.splitlines()[-15:]))
    sys.exit(0 if all(checks) else 1)


if __name__ == "__main__":
    main()
