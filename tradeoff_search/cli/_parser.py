"""The command line's arguments: one parser, its commands and their flags, and the argument types
that refuse a bad value in one line (exit 2)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import NoReturn

from tradeoff_search.stores import DEFAULT_STORAGE, DEFAULT_TRACKING_URI, STORAGE_ENV, TRACKING_ENV

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other input error (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _workers(text: str) -> int:
    """At most one worker process per logical core: each trains with TensorFlow threads of its
    own and holds ~0.5 GB; more would only wait for the cores and the latency lock."""
    cores = os.cpu_count() or 1
    value = _positive_int(text)
    if value > cores:
        raise argparse.ArgumentTypeError(f"expected at most the {cores} logical cores of this machine, got {text!r}")
    return value


def _number_in(low: float, high: float, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number with ``low < value <= high`` (``what`` says so)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low < value <= high and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_float = _number_in(0, math.inf, "a number > 0")
_accuracy = _number_in(0, 1, "an accuracy in (0, 1]")
_negative_float = _number_in(-math.inf, -math.ulp(0), "a number < 0")


def _port(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tradeoff_search",
        description="Search Keras architectures × optimizers for accuracy vs measured inference latency "
        "(Optuna multi-objective), recorded in MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_study_commands(commands)
    _add_ui(commands)
    _add_device(commands)
    return parser


# URLs may hold passwords: they can come from the environment instead of the command line,
# which any user of the machine can read (ps, /proc/PID/cmdline).
def _tracking_flag(command: argparse.ArgumentParser, what: str = "MLflow tracking URI") -> None:
    command.add_argument(
        "--tracking-uri",
        default=os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI,
        help=f"{what} (default: ${TRACKING_ENV}, else {DEFAULT_TRACKING_URI})",
    )


def _with_stores(command: argparse.ArgumentParser, tracking: bool = True) -> None:
    command.add_argument("spec", help="study spec (TOML), e.g. studies/digits.toml")
    command.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE,
        help=f"Optuna storage URL (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE})",
    )
    if tracking:
        _tracking_flag(command)


def _add_run(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run or resume a study")
    _with_stores(run)
    run.add_argument("--n-trials", type=_positive_int, help="finished trials to reach (default: the spec's)")
    run.add_argument("--timeout", type=_positive_float, help="stop starting trials after this many seconds")
    run.add_argument("--workers", type=_workers, default=1, help="worker processes on this machine (default: 1)")
    run.add_argument("--in-process", action="store_true", help="run the trials in this process (memory grows)")
    run.add_argument("--worker-growth-mb", type=_positive_float, metavar="MB",
                     help="replace a worker whose memory grew by this much (default: the spec's, 1024)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--accept-builder-change",
        action="store_true",
        help="resume even though a builder's source file changed since the study began",
    )
    run.add_argument("--accept-data-change", action="store_true",
                     help="resume even though the data file or image folder changed since the study began")  # fmt: skip
    run.add_argument("--spec-changed", action="store_true",
                     help="go on under the spec file as it is now, not the one the study was created with")  # fmt: skip


def _add_study_commands(commands: argparse._SubParsersAction) -> None:
    pareto = commands.add_parser("pareto", help="print a study's Pareto set")
    _with_stores(pareto, tracking=False)
    pareto.add_argument("--explain", action="store_true", help="also: which hyperparameters decide each objective")

    select = commands.add_parser("select", help="pick one model of the front, test, export and register it")
    _with_stores(select)
    rule = select.add_mutually_exclusive_group()
    rule.add_argument("--rule", choices=["knee"], default="knee", help="the front's knee (default)")
    rule.add_argument("--min-accuracy", type=_accuracy, metavar="A", help="fastest with accuracy >= A")
    rule.add_argument(
        "--mnas", type=_negative_float, metavar="W", help="max accuracy·(latency/target)^W (MnasNet; W < 0)"
    )
    budgets = select.add_argument_group("budgets", "the most accurate model within all the budgets given")
    budgets.add_argument("--max-latency-ms", type=_positive_float, metavar="T", help="latency at most T ms")
    budgets.add_argument("--max-ram-kb", type=_positive_float, metavar="R",
                         help="RAM at most R KB (1024 bytes) on the micro runtime, as measured")  # fmt: skip
    budgets.add_argument("--max-flash-kb", type=_positive_float, metavar="F", help="the .tflite at most F KB")
    select.add_argument("--target-ms", type=_positive_float, help="--mnas target latency (default: front median)")
    select.add_argument("--out", help="export folder (default: mlruns/selected/STUDY)")

    sync = commands.add_parser("sync", help="rebuild or repair a study's MLflow record from the Optuna storage")
    _with_stores(sync)


def _add_ui(commands: argparse._SubParsersAction) -> None:
    ui = commands.add_parser("ui", help="open the MLflow UI on a study's runs")
    ui.add_argument("spec", nargs="?", help="the study whose runs to open (default: the most recent study)")
    _tracking_flag(ui, "MLflow backend store")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=_port, default=5000, help="port (default: 5000)")
    ui.add_argument("--no-browser", action="store_true", help="print the runs page's URL, do not open a browser")


def _add_device(commands: argparse._SubParsersAction) -> None:
    device = commands.add_parser("device", help="the latency server a study times on (run it on the target device)")
    device_commands = device.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    serve = device_commands.add_parser("serve", help="time the .tflite files workers send, one at a time")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=_port, default=8765, help="port (default: 8765; 0: any free one)")
    serve.add_argument("--token-file", help="file holding the token clients send (TRADEOFF_SEARCH_DEVICE_TOKEN); "
                       "required to bind beyond this machine")  # fmt: skip
    serve.add_argument("--max-mb", type=_positive_float, default=64.0, help="largest request body (default: 64 MB)")
    serve.add_argument("--client-timeout", type=_positive_float, default=30.0,
                       help="seconds a client may take to send its request, head and body (default: 30)")  # fmt: skip
    serve.add_argument("--max-connections", type=int, default=256, help="open connections at most (default: 256)")
    serve.add_argument("--max-queue", type=int, default=32, help="requests waiting to be timed at most (default: 32)")
    serve.add_argument("--max-memory-mb", type=_positive_float,
                       help="memory of the timing process (default: half the device's, 4096 at most)")  # fmt: skip
