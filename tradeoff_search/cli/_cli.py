"""``python -m tradeoff_search``: a thin shell over the public API.

Heavy modules (TensorFlow, MLflow, Optuna) are imported inside the commands, so ``--help`` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from tradeoff_search.cost._device_client import DeviceUnreachable
from tradeoff_search.process._signals import stopped_like_ctrl_c
from tradeoff_search.record._keys import FAIL_REASON, VARIANT_OF
from tradeoff_search.rules import RunError, SpecError
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.spec._validation import as_flag
from tradeoff_search.stores._stores import known_failure
from tradeoff_search.tracking._callback import IntegrityError

if TYPE_CHECKING:
    import subprocess

    import optuna

    from tradeoff_search.tracking import _mlflow_ui as _mlflow_ui

_logger = logging.getLogger("tradeoff_search")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The flag that gives each parameter of the public API: a bad argument's error names the flag.
_FLAGS = {
    "storage": "--storage",
    "tracking_uri": "--tracking-uri",
    "workers": "--workers",
    "out": "--out",
    "max_latency_ms": "--max-latency-ms",
    "min_accuracy": "--min-accuracy",
    "mnas_weight": "--mnas",
    "target_ms": "--target-ms",
}


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


def build_parser() -> argparse.ArgumentParser:
    from tradeoff_search.stores._stores import DEFAULT_STORAGE, DEFAULT_TRACKING_URI, STORAGE_ENV, TRACKING_ENV

    parser = _Parser(
        prog="tradeoff_search",
        description="Search Keras architectures × optimizers for accuracy vs measured inference latency "
        "(Optuna multi-objective), recorded in MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # URLs may hold passwords: they can come from the environment instead of the command line,
    # which any user of the machine can read (ps, /proc/PID/cmdline).
    storage = os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    tracking_uri = os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI

    def tracking_flag(command: argparse.ArgumentParser, what: str = "MLflow tracking URI") -> None:
        command.add_argument(
            "--tracking-uri",
            default=tracking_uri,
            help=f"{what} (default: ${TRACKING_ENV}, else {DEFAULT_TRACKING_URI})",
        )

    def with_stores(command: argparse.ArgumentParser, tracking: bool = True) -> None:
        command.add_argument("spec", help="study spec (TOML), e.g. studies/digits.toml")
        command.add_argument(
            "--storage", default=storage, help=f"Optuna storage URL (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE})"
        )
        if tracking:
            tracking_flag(command)

    run = commands.add_parser("run", help="run or resume a study")
    with_stores(run)
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
    run.add_argument("--spec-changed", action="store_true",
                     help="go on under the spec file as it is now, not the one the study was created with")  # fmt: skip

    pareto = commands.add_parser("pareto", help="print a study's Pareto set")
    with_stores(pareto, tracking=False)
    pareto.add_argument("--explain", action="store_true", help="also: which hyperparameters decide each objective")

    select = commands.add_parser("select", help="pick one model of the front, test, export and register it")
    with_stores(select)
    rule = select.add_mutually_exclusive_group()
    rule.add_argument("--rule", choices=["knee"], default="knee", help="the front's knee (default)")
    rule.add_argument("--max-latency-ms", type=_positive_float, metavar="T", help="most accurate within T ms")
    rule.add_argument("--min-accuracy", type=_accuracy, metavar="A", help="fastest with accuracy >= A")
    rule.add_argument(
        "--mnas", type=_negative_float, metavar="W", help="max accuracy·(latency/target)^W (MnasNet; W < 0)"
    )
    select.add_argument("--target-ms", type=_positive_float, help="--mnas target latency (default: front median)")
    select.add_argument("--out", help="export folder (default: mlruns/selected/STUDY)")

    sync = commands.add_parser("sync", help="rebuild or repair a study's MLflow record from the Optuna storage")
    with_stores(sync)

    ui = commands.add_parser("ui", help="open the MLflow UI on a study's runs")
    ui.add_argument("spec", nargs="?", help="the study whose runs to open (default: the most recent study)")
    tracking_flag(ui, "MLflow backend store")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=_port, default=5000, help="port (default: 5000)")
    ui.add_argument("--no-browser", action="store_true", help="print the runs page's URL, do not open a browser")

    device = commands.add_parser("device", help="the latency server a study times on (run it on the target device)")
    device_commands = device.add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    serve = device_commands.add_parser("serve", help="time the .tflite files workers send, one at a time")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=_port, default=8765, help="port (default: 8765; 0: any free one)")
    serve.add_argument("--token-file", help="file holding the token clients send (TRADEOFF_SEARCH_DEVICE_TOKEN); "
                       "required to bind beyond this machine")  # fmt: skip
    serve.add_argument("--max-mb", type=_positive_float, default=64.0, help="largest request body (default: 64 MB)")
    serve.add_argument("--client-timeout", type=_positive_float, default=30.0,
                       help="seconds a client may take to send its request (default: 30)")  # fmt: skip
    return parser


def _port(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "target_ms", None) is not None and args.mnas is None:
        parser.exit(EXIT_USAGE, f"error: {parser.prog} select: argument --target-ms: is the --mnas target, "
                    f"got {args.target_ms} without --mnas\n")  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        commands = {"run": _run, "pareto": _pareto, "select": _select, "sync": _sync, "ui": _ui, "device": _device}
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


def _device(args: argparse.Namespace) -> int:
    """``device serve``: imports the harness only (no TensorFlow, Keras, MLflow or Optuna)."""
    from pathlib import Path

    from tradeoff_search.device._server import read_token, serve

    try:
        token = None if args.token_file is None else read_token(Path(args.token_file))
        serve(args.host, args.port, token, args.max_mb, args.client_timeout)
    except (ValueError, OSError) as error:  # a bad flag, or the address cannot be bound
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _load(args: argparse.Namespace) -> StudySpec:
    return StudySpec.load(args.spec)


def _run(args: argparse.Namespace) -> int:
    import optuna

    from tradeoff_search.data._dataset import load_dataset
    from tradeoff_search.front import Front, fastest_trial, format_table
    from tradeoff_search.process._logs import native_output_to, quiet_libraries
    from tradeoff_search.stores._stores import check_stores
    from tradeoff_search.study._study import check_device, run_study
    from tradeoff_search.study._workers import StoreFailed, WorkersFailed, finished_count, worker_logs
    from tradeoff_search.trial._training_device import INSTALL_HINT, describe_training, tensorflow_missing

    spec = _load(args).override(n_trials=args.n_trials, timeout=args.timeout, worker_growth_mb=args.worker_growth_mb)
    check_device(spec)  # before the stores, the data and TensorFlow: at once
    check_stores(args.storage, args.tracking_uri)
    if tensorflow_missing():
        print(f"error: TensorFlow is not installed: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_FAILED
    # The data is checked before TensorFlow loads (a bad file gets one line, without TensorFlow's
    # start-up chatter), and its sizes are said after where training runs, which comes first.
    data_log = logging.getLogger("tradeoff_search.data._dataset")
    data_log.disabled = True
    try:
        data = load_dataset(spec)
    finally:
        data_log.disabled = False
    logs = worker_logs(spec)
    started = time.monotonic()
    try:
        with native_output_to(logs / f"run-{os.getpid()}.log"):  # TensorFlow's start-up lines
            print(describe_training(), flush=True)
            print(data.summary, flush=True)
            quiet_libraries()
            study = run_study(
                spec,
                storage=args.storage,
                tracking_uri=args.tracking_uri,
                data=data,
                workers=0 if args.in_process else args.workers,
                show_progress_bar=not args.no_progress,
                accept_builder_change=args.accept_builder_change,
                spec_changed=args.spec_changed,
            )
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
        log = logs / f"run-{os.getpid()}.log"
        with log.open("a") as file:
            traceback.print_exception(error, file=file)
        print(f"error: {reason} (traceback: {log}); {_after_a_store_failure(args)}", file=sys.stderr)
        return EXIT_FAILED
    timed_out = spec.study.timeout is not None and time.monotonic() - started >= spec.study.timeout
    print(f"\nPareto set of study {spec.study.name!r} ({_trial_counts(study)}):")
    front = Front.of(study)
    print(format_table(front.rows()))
    _print_browse_hint(args, spec)
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if complete == 0:
        tracebacks = "" if args.in_process else f" (tracebacks: the worker logs in {logs})"
        print(f"error: no trial completed; {_first_failure(study)}; all reasons are in MLflow{tracebacks}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    budget_ms = spec.latency.budget_ms
    fastest = fastest_trial(study)
    if budget_ms is not None and fastest is not None and not front.best_trials:
        print(
            f"error: {args.spec}: latency.budget_ms = {budget_ms}: none of the {complete} candidates met it; "
            f"the fastest measured {fastest.values[1]:.4g} ms (trial {fastest.number}). "
            "Raise the budget or search smaller models.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finished = finished_count(study)
    if finished < spec.study.n_trials and not timed_out:
        print(f"error: the study has {finished} of its {spec.study.n_trials} trials (failed ones free their place); "
              "run the same command again to run the missing ones", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return EXIT_OK


def _after_a_store_failure(args: argparse.Namespace) -> str:
    """What to do once a store works again: ``sync`` repairs the record, ``run`` resumes."""
    from tradeoff_search.stores._stores import DEFAULT_STORAGE, DEFAULT_TRACKING_URI

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

    from tradeoff_search.front._pareto import is_feasible

    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    count = collections.Counter(t.state for t in trials)
    over = sum(t.state == state.COMPLETE and not is_feasible(t) for t in trials)
    variants = sum(VARIANT_OF in t.user_attrs for t in trials)
    notes = [f"{variants} quantization variants"] * bool(variants) + [f"{over} over the latency budget"] * bool(over)
    counts = [f"{count[state.COMPLETE]} complete" + (f" ({', '.join(notes)})" if notes else "")]
    counts += [f"{count[state.PRUNED]} pruned"] if count[state.PRUNED] else []
    return ", ".join([*counts, f"{count[state.FAIL]} failed trials"])


def _pareto(args: argparse.Namespace) -> int:
    from tradeoff_search.front import completed_trials, format_table, front_rows, is_feasible

    _, study = _existing_study(args)
    print(format_table(front_rows(study)))
    if args.explain:
        from tradeoff_search.tracking._report import param_importances

        for objective, importances in param_importances(study).items():
            ranked = ", ".join(f"{name} {share:.2f}" for name, share in importances.items())
            print(f"\nwhat decides {objective}: {ranked}")
        feasible = sum(is_feasible(t) for t in completed_trials(study))
        if feasible < 30:  # PED-ANOVA contrasts the best 10% of the trials with all of them
            print(f"\n(from {feasible} feasible trials, whose best 10% are {max(1, round(feasible / 10))}: a hint)")
    return EXIT_OK


def _existing_study(args: argparse.Namespace) -> tuple[StudySpec, optuna.Study]:
    """The spec and its study, which must exist; the tracking URI is checked when the command has one."""
    from tradeoff_search.process._logs import quiet_libraries
    from tradeoff_search.stores._stores import check_tracking_uri
    from tradeoff_search.study._study import open_study

    quiet_libraries()
    spec = _load(args)
    if "tracking_uri" in args:
        check_tracking_uri(args.tracking_uri)
    return spec, open_study(spec, args.storage, create=False)


def _select(args: argparse.Namespace) -> int:
    from tradeoff_search.selection._select import select_model
    from tradeoff_search.stores._stores import STATE_DIR

    spec, study = _existing_study(args)
    given = {"max_latency": args.max_latency_ms, "min_accuracy": args.min_accuracy, "mnas": args.mnas}
    rule = next((name for name, value in given.items() if value is not None), "knee")
    chosen = select_model(
        spec,
        study,
        args.out or STATE_DIR / "selected" / spec.study.name,
        rule=rule,
        tracking_uri=args.tracking_uri,
        max_latency_ms=args.max_latency_ms,
        min_accuracy=args.min_accuracy,
        mnas_weight=args.mnas if args.mnas is not None else -0.07,
        target_ms=args.target_ms,
    )
    print(f"trial {chosen.trial} by {rule}: accuracy {chosen.validation_accuracy:.4f} validation, "
          f"{chosen.test_accuracy:.4f} test (never seen by the search)")  # fmt: skip
    print(f"latency {chosen.latency_ms * 1e3:.2f} µs on the front, {chosen.exported_latency_ms * 1e3:.2f} µs exported")
    print(f"exported {chosen.keras_path} and {chosen.tflite_path}")
    if chosen.preprocessing_path is not None:
        print(f"exported {chosen.preprocessing_path}: apply it to raw rows before the model (see the README)")
    quantized = "" if chosen.test_accuracy_float is None else f", float model {chosen.test_accuracy_float:.4f} test"
    print(f"{chosen.tflite_path}: quantization {chosen.quantization}, input {chosen.input_type}, "
          f"output {chosen.output_type}{quantized}")  # fmt: skip
    print(f"registered {chosen.registered_model} version {chosen.registered_version}")
    return EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    from tradeoff_search.space._builders import keras_classes, spec_builders
    from tradeoff_search.study._study import make_callback, sync_record

    spec, study = _existing_study(args)
    callback = make_callback(spec, args.tracking_uri, custom_objects=keras_classes(spec_builders(spec).values()))
    report = sync_record(study, callback, spec)
    print(f"MLflow record of study {spec.study.name!r} matches its {len(study.trials)} trials: {report}")
    return EXIT_OK


def _print_browse_hint(args: argparse.Namespace, spec: StudySpec) -> None:
    """Where the study's runs open in the MLflow UI: an MLflow server's own pages, else those of ``ui``."""
    from mlflow import MlflowClient

    from tradeoff_search.stores._stores import DEFAULT_TRACKING_URI, redact
    from tradeoff_search.tracking._mlflow_ui import study_pages

    server = _server_base(args.tracking_uri)
    pages = study_pages(MlflowClient(args.tracking_uri), server or _UI_BASE, spec.tracking.experiment)
    if server is None:
        tracking = "" if args.tracking_uri == DEFAULT_TRACKING_URI else f" --tracking-uri {redact(args.tracking_uri)}"
        print(f"\nBrowse it: python -m tradeoff_search ui {args.spec}{tracking}")
    else:
        print("\nBrowse it:")
    for page in pages:
        _print_pages(page)


_UI_BASE = "http://127.0.0.1:5000"  # where `ui` serves by default


def _server_base(tracking_uri: str) -> str | None:
    """An MLflow server's address without credentials (``None`` for a database store)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"), "", ""))


def _print_pages(page: _mlflow_ui.StudyPages) -> None:
    print(f"  runs of {page.experiment!r}: {page.runs}")
    if page.front_plot is not None:
        print(f"  its Pareto front plot: {page.front_plot}")


def _ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI, print the runs page of the spec's study (or of every study, the most
    recent first) once it answers, and open that page in a browser if there is one."""
    import subprocess

    from mlflow import MlflowClient

    from tradeoff_search.device._server import is_loopback
    from tradeoff_search.stores._stores import STATE_DIR, redact
    from tradeoff_search.tracking._mlflow_ui import study_pages

    if not is_loopback(args.host):
        print(f"warning: --host {args.host}: the MLflow UI has no authentication; anyone who reaches this "
              "address can read and change every record in it", file=sys.stderr)  # fmt: skip
    spec = _load(args) if args.spec else None
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{'[' + host + ']' if ':' in host else host}:{args.port}"
    experiment = spec.tracking.experiment if spec is not None else None
    pages = study_pages(MlflowClient(args.tracking_uri), base, experiment)
    if spec is not None and not pages:
        raise SpecError(args.spec, "tracking.experiment", experiment,
                        f"an experiment of {redact(args.tracking_uri)} (run the study first)")  # fmt: skip
    # Job execution spawns ~2.8 GB of workers, and 4 server workers are 4 processes: browsing
    # needs neither. The store URI goes by the environment: a command line is public on the machine.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": args.tracking_uri}
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--default-artifact-root", str(STATE_DIR.resolve()),
        "--host", args.host,
        "--port", str(args.port),
        "--workers", "1",
    ]  # fmt: skip
    print(f"MLflow UI for {redact(args.tracking_uri)} on {base} (Ctrl-C stops it)", flush=True)
    with subprocess.Popen(command, env=env) as server:
        try:
            if not _answers(f"{base}/health", server):
                return server.wait()
            for page in pages:
                _print_pages(page)
            if pages and not args.no_browser:
                opened = _open_in_browser(pages[0].runs)
                print("opened in your browser" if opened else "no browser here: open the page above", flush=True)
            return server.wait()
        except KeyboardInterrupt:  # Ctrl-C is how the UI is meant to stop
            server.terminate()
            server.wait()
            return EXIT_OK


def _answers(url: str, server: subprocess.Popen[bytes], seconds: float = 120) -> bool:
    """Whether ``url`` answers before ``seconds`` pass (``False`` as soon as the server has exited)."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _open_in_browser(url: str) -> bool:
    """Open ``url`` if this session has a browser: a display, or one named by ``$BROWSER``."""
    import webbrowser

    headless = sys.platform.startswith("linux") and not any(
        os.environ.get(name) for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")
    )
    if headless:  # a text-mode browser would take over this terminal
        return False
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
