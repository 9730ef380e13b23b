"""``run``: run or resume a study, print its Pareto set and say what is missing, if anything."""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from tradeoff_search import Dataset, StoreFailed, StudySpec, WorkersFailed, load_dataset, run_study
from tradeoff_search.cli._parser import EXIT_FAILED, EXIT_OK
from tradeoff_search.cli._ui import print_browse_hint
from tradeoff_search.cost import lock_path
from tradeoff_search.process import native_output_to, quiet_libraries
from tradeoff_search.record import FAIL_REASON, FLASH_CONSTRAINT, LATENCY_CONSTRAINT, RAM_CONSTRAINT, VARIANT_OF
from tradeoff_search.stores import DEFAULT_STORAGE, DEFAULT_TRACKING_URI, check_stores, known_failure
from tradeoff_search.study import check_device, finished_count, worker_logs

if TYPE_CHECKING:
    import optuna

    from tradeoff_search.front import Front


def run(args: argparse.Namespace) -> int:
    from tradeoff_search.front import Front, format_table
    from tradeoff_search.trial import INSTALL_HINT, tensorflow_missing

    spec = StudySpec.load(args.spec).override(
        n_trials=args.n_trials, timeout=args.timeout, worker_growth_mb=args.worker_growth_mb
    )
    check_device(spec)  # before the stores, the data and TensorFlow: at once
    check_stores(args.storage, args.tracking_uri)
    lock_path()  # made now: a folder it cannot be made in is one line before the data and the logs
    if tensorflow_missing():
        print(f"error: TensorFlow is not installed: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_FAILED
    data = _load_quietly(spec)
    logs = worker_logs(spec)
    started = time.monotonic()
    try:
        study = _run_study(args, spec, data, logs)
    except StoreFailed as error:  # its traceback is in the worker's log
        print(f"error: {error}; {_after_a_store_failure(args)}", file=sys.stderr)
        return EXIT_FAILED
    except WorkersFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:  # in this process (--in-process, or opening the study)
        reason = known_failure(error)
        if reason is None:
            raise
        return _failed_here(args, error, reason, logs)
    timed_out = spec.study.timeout is not None and time.monotonic() - started >= spec.study.timeout
    print(f"\nPareto set of study {spec.study.name!r} ({_trial_counts(study)}):")
    front = Front.of(study)
    print(format_table(front.rows()))
    print_browse_hint(args, spec)
    return _verdict(args, spec, study, front, logs, timed_out)


def _load_quietly(spec: StudySpec) -> Dataset:
    """The data is checked before TensorFlow loads (a bad file gets one line, without TensorFlow's
    start-up chatter), and its sizes are said after where training runs, which comes first."""
    data_log = logging.getLogger("tradeoff_search.data._dataset")
    data_log.disabled = True
    try:
        return load_dataset(spec)
    finally:
        data_log.disabled = False


def _run_study(args: argparse.Namespace, spec: StudySpec, data: Dataset, logs: Path) -> optuna.Study:
    from tradeoff_search.trial import describe_modes, describe_training

    with native_output_to(logs / f"run-{os.getpid()}.log"):  # TensorFlow's start-up lines
        print(describe_training(), flush=True)
        print(data.summary, flush=True)
        if (modes := describe_modes(spec)) is not None:
            print(modes, flush=True)
        quiet_libraries()
        return run_study(
            spec,
            storage=args.storage,
            tracking_uri=args.tracking_uri,
            data=data,
            workers=0 if args.in_process else args.workers,
            show_progress_bar=not args.no_progress,
            accept_builder_change=args.accept_builder_change,
            accept_data_change=args.accept_data_change,
            spec_changed=args.spec_changed,
        )


def _failed_here(args: argparse.Namespace, error: Exception, reason: str, logs: Path) -> int:
    """A store or file failure in this process: its one line, its traceback in this run's log."""
    log = logs / f"run-{os.getpid()}.log"
    with log.open("a", encoding="utf-8") as file:
        traceback.print_exception(error, file=file)
    print(f"error: {reason} (traceback: {log}); {_after_a_store_failure(args)}", file=sys.stderr)
    return EXIT_FAILED


def _verdict(
    args: argparse.Namespace, spec: StudySpec, study: optuna.Study, front: Front, logs: Path, timed_out: bool
) -> int:
    """Exit 0 when the study has what it was run for, else 1 with the one line that says why."""
    import optuna

    from tradeoff_search.front import fastest_trial

    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if complete == 0:
        tracebacks = "" if args.in_process else f" (tracebacks: the worker logs in {logs})"
        print(f"error: no trial completed; {_first_failure(study)}; all reasons are in MLflow{tracebacks}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    budget_ms = spec.latency.budget_ms
    fastest = fastest_trial(study)
    others = _memory_budgets(spec)
    if budget_ms is not None and not others and fastest is not None and not front.best_trials:
        print(
            f"error: {args.spec}: latency.budget_ms = {budget_ms}: none of the {complete} candidates met it; "
            f"the fastest measured {fastest.values[1]:.4g} ms (trial {fastest.number}). "
            "Raise the budget or search smaller models.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if others and not front.best_trials:
        given = {"latency_ms": budget_ms, "ram_kb": spec.budget.ram_kb, "flash_kb": spec.budget.flash_kb}
        budgets = ", ".join(f"{key} = {limit:g}" for key, limit in given.items() if limit is not None)
        print(f"error: {args.spec}: [budget] {budgets}: none of the {complete} candidates met them all; "
              f"{_closest(study, given)}. Raise a budget or search smaller models.", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    finished = finished_count(study)
    if finished < spec.study.n_trials and not timed_out:
        print(f"error: the study has {finished} of its {spec.study.n_trials} trials (failed ones free their place); "
              "run the same command again to run the missing ones", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return EXIT_OK


def _memory_budgets(spec: StudySpec) -> dict[str, float]:
    """The spec's RAM and flash budgets that are set, by key."""
    return {key: limit for key, limit in {"ram_kb": spec.budget.ram_kb, "flash_kb": spec.budget.flash_kb}.items()
            if limit is not None}  # fmt: skip


def _closest(study: optuna.Study, budgets: dict[str, float | None]) -> str:
    """The measured candidate least over the budgets (the smallest largest excess, as a share of
    its budget: milliseconds and kB do not compare), in words."""
    import optuna

    limits = {LATENCY_CONSTRAINT: budgets["latency_ms"], RAM_CONSTRAINT: budgets["ram_kb"],
              FLASH_CONSTRAINT: budgets["flash_kb"]}  # fmt: skip
    measured = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.constraints]  # fmt: skip
    if not measured:
        return "none was measured"

    def share(trial: optuna.trial.FrozenTrial) -> float:
        return max(excess / (limits.get(key) or 1.0) for key, excess in trial.constraints.items())

    closest = min(measured, key=share)
    over = ", ".join(f"{key} {excess:+.4g}" for key, excess in closest.constraints.items() if excess > 0)
    return f"the closest, trial {closest.number}, is over by {over}"


def _after_a_store_failure(args: argparse.Namespace) -> str:
    """What to do once a store works again: ``sync`` repairs the record, ``run`` resumes."""
    flags = "" if (args.storage, args.tracking_uri) == (DEFAULT_STORAGE, DEFAULT_TRACKING_URI) else " (same stores)"
    return (f"finished trials are kept: once that is fixed, complete the MLflow record with "
            f"python -m tradeoff_search sync {args.spec}{flags}, then run this command again")  # fmt: skip


def _first_failure(study: optuna.Study) -> str:
    """Why the first failed trial failed (worker processes' own output is not shown)."""
    import optuna

    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    if not failed:
        return "none failed: all were pruned, or the timeout came first"
    reason = failed[0].user_attrs.get(FAIL_REASON, "no reason recorded")
    return f"trial {failed[0].number} failed: {' '.join(str(reason).split())[:300]}"


def _trial_counts(study: optuna.Study) -> str:
    """E.g. ``"28 complete (3 over the latency budget), 2 pruned, 0 failed trials"``, variants counted."""
    import optuna

    from tradeoff_search.front import is_feasible

    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    count = collections.Counter(t.state for t in trials)
    over = sum(t.state == state.COMPLETE and not is_feasible(t) for t in trials)
    variants = sum(VARIANT_OF in t.user_attrs for t in trials)
    budget = "a budget" if any(set(t.constraints) - {LATENCY_CONSTRAINT} for t in trials) else "the latency budget"
    notes = [f"{variants} quantization variants"] * bool(variants) + [f"{over} over {budget}"] * bool(over)
    counts = [f"{count[state.COMPLETE]} complete" + (f" ({', '.join(notes)})" if notes else "")]
    counts += [f"{count[state.PRUNED]} pruned"] if count[state.PRUNED] else []
    return ", ".join([*counts, f"{count[state.FAIL]} failed trials"])
