"""``python -m tradeoff_search``: a thin shell over the public API.

Heavy modules (TensorFlow, MLflow, Optuna) are imported inside the commands, so ``--help`` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Sequence

from tradeoff_search import IntegrityError, RunError, SpecError
from tradeoff_search.cli._device import device
from tradeoff_search.cli._parser import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, build_parser
from tradeoff_search.cli._run import run
from tradeoff_search.cli._study_commands import pareto, select, sync
from tradeoff_search.cli._ui import ui
from tradeoff_search.cost import DeviceUnreachable
from tradeoff_search.process import stopped_like_ctrl_c
from tradeoff_search.spec import as_flag
from tradeoff_search.stores import known_failure

# The flag that gives each parameter of the public API: a bad argument's error names the flag.
_FLAGS = {
    "storage": "--storage",
    "tracking_uri": "--tracking-uri",
    "workers": "--workers",
    "out": "--out",
    "max_latency_ms": "--max-latency-ms",
    "max_ram_kb": "--max-ram-kb",
    "max_flash_kb": "--max-flash-kb",
    "min_accuracy": "--min-accuracy",
    "mnas_weight": "--mnas",
    "target_ms": "--target-ms",
}


def main(argv: Sequence[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # a character the locale cannot show (the help's ×, a
        sys.stdout.reconfigure(errors="backslashreplace")  # study's name) is escaped, as on stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "select":
        _check_select(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    # The first time it runs on a machine, matplotlib says "generated new fontManager" at INFO.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        commands = {"run": run, "pareto": pareto, "select": select, "sync": sync, "ui": ui, "device": device}
        with stopped_like_ctrl_c():
            return commands[args.command](args)
    except (SpecError, RunError) as error:  # bad input, or a study not ready for the command
        print(f"error: {as_flag(error, _FLAGS)}", file=sys.stderr)
        return EXIT_USAGE
    except (DeviceUnreachable, IntegrityError) as error:  # a device lost mid-study: the study stopped, resumable
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        reason = known_failure(error)
        if reason is None:  # a bug: its traceback is what a report needs
            raise
        print(f"error: {reason}", file=sys.stderr)
        return EXIT_FAILED


def _check_select(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say of ``select``'s flags: --target-ms goes with --mnas, budgets with no other rule."""
    if args.target_ms is not None and args.mnas is None:
        parser.exit(EXIT_USAGE, f"error: {parser.prog} select: argument --target-ms: is the --mnas target, "
                    f"got {args.target_ms} without --mnas\n")  # fmt: skip
    given = [flag for flag in ("--max-latency-ms", "--max-ram-kb", "--max-flash-kb", "--min-accuracy", "--mnas")
             if getattr(args, flag[2:].replace("-", "_")) is not None]  # fmt: skip
    budgets = [flag for flag in given if flag.startswith("--max-")]
    rule = next((flag for flag in given if flag not in budgets), None)
    if budgets and rule is not None:
        parser.exit(EXIT_USAGE, f"error: {parser.prog} select: argument {rule}: not allowed with {budgets[0]} "
                    f"(budgets pick the most accurate model within them)\n")  # fmt: skip
