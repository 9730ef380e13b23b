"""``pareto``, ``select`` and ``sync``: commands on a study that exists."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tradeoff_search import StudySpec, select_model
from tradeoff_search.cli._parser import EXIT_OK
from tradeoff_search.process import quiet_libraries
from tradeoff_search.spec import KB
from tradeoff_search.stores import STATE_DIR, check_tracking_uri
from tradeoff_search.study import open_study, sync_study

if TYPE_CHECKING:
    import optuna


def pareto(args: argparse.Namespace) -> int:
    from tradeoff_search.front import completed_trials, format_table, front_rows, is_feasible

    _, study = _existing_study(args)
    print(format_table(front_rows(study)))
    if args.explain:
        from tradeoff_search.tracking import param_importances

        for objective, importances in param_importances(study).items():
            ranked = ", ".join(f"{name} {share:.2f}" for name, share in importances.items())
            print(f"\nwhat decides {objective}: {ranked}")
        feasible = sum(is_feasible(t) for t in completed_trials(study))
        if feasible < 30:  # PED-ANOVA contrasts the best 10% of the trials with all of them
            print(f"\n(from {feasible} feasible trials, whose best 10% are {max(1, round(feasible / 10))}: a hint)")
    return EXIT_OK


def _existing_study(args: argparse.Namespace) -> tuple[StudySpec, optuna.Study]:
    """The spec and its study, which must exist; the tracking URI is checked when the command has one."""
    quiet_libraries()
    spec = StudySpec.load(args.spec)
    if "tracking_uri" in args:
        check_tracking_uri(args.tracking_uri, storage=args.storage)
    return spec, open_study(spec, args.storage, create=False)


def select(args: argparse.Namespace) -> int:
    spec, study = _existing_study(args)
    budgets = {"max_latency_ms": args.max_latency_ms, "max_ram_kb": args.max_ram_kb, "max_flash_kb": args.max_flash_kb}
    given = {"budget": any(v is not None for v in budgets.values()) or None, "min_accuracy": args.min_accuracy,
             "mnas": args.mnas}  # fmt: skip
    rule = next((name for name, value in given.items() if value is not None), "knee")
    chosen = select_model(
        spec,
        study,
        args.out or STATE_DIR / "selected" / spec.study.name,
        rule=rule,
        tracking_uri=args.tracking_uri,
        **budgets,
        min_accuracy=args.min_accuracy,
        mnas_weight=args.mnas if args.mnas is not None else -0.07,
        target_ms=args.target_ms,
    )
    print(f"trial {chosen.trial} by {rule}: accuracy {chosen.validation_accuracy:.4f} validation, "
          f"{chosen.test_accuracy:.4f} test (never seen by the search)")  # fmt: skip
    if chosen.binding:
        print(chosen.binding)
    print(f"latency {chosen.latency_ms * 1e3:.2f} µs on the front, {chosen.exported_latency_ms * 1e3:.2f} µs exported")
    ram = "" if chosen.ram_bytes is None else f", RAM {chosen.ram_bytes / KB:.2f} KB on the micro runtime"
    print(f"flash {chosen.flash_bytes / KB:.2f} KB{ram}")
    print(f"exported {chosen.keras_path} and {chosen.tflite_path}")
    if chosen.preprocessing_path is not None:
        print(f"exported {chosen.preprocessing_path}: apply it to raw rows before the model (see docs/data.md)")
    quantized = "" if chosen.test_accuracy_float is None else f", float model {chosen.test_accuracy_float:.4f} test"
    print(f"{chosen.tflite_path}: quantization {chosen.quantization}, input {chosen.input_type}, "
          f"output {chosen.output_type}{quantized}")  # fmt: skip
    print(f"registered {chosen.registered_model} version {chosen.registered_version}")
    return EXIT_OK


def sync(args: argparse.Namespace) -> int:
    spec, study = _existing_study(args)
    report = sync_study(spec, study, args.tracking_uri)
    print(f"MLflow record of study {spec.study.name!r} matches its {len(study.trials)} trials: {report}")
    return EXIT_OK
