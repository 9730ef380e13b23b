"""``ui``: the MLflow UI on a study's runs; and where ``run`` tells its study's runs open."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from tradeoff_search import SpecError, StudySpec
from tradeoff_search.cli._parser import EXIT_OK
from tradeoff_search.stores import DEFAULT_TRACKING_URI, STATE_DIR, redact

if TYPE_CHECKING:
    import subprocess

    from tradeoff_search.tracking import StudyPages

_UI_BASE = "http://127.0.0.1:5000"  # where `ui` serves by default


def print_browse_hint(args: argparse.Namespace, spec: StudySpec) -> None:
    """Where the study's runs open in the MLflow UI: an MLflow server's own pages, else those of ``ui``."""
    from mlflow import MlflowClient

    from tradeoff_search.tracking import study_pages

    server = _server_base(args.tracking_uri)
    pages = study_pages(MlflowClient(args.tracking_uri), server or _UI_BASE, spec.tracking.experiment)
    if server is None:
        tracking = "" if args.tracking_uri == DEFAULT_TRACKING_URI else f" --tracking-uri {redact(args.tracking_uri)}"
        print(f"\nBrowse it: python -m tradeoff_search ui {args.spec}{tracking}")
    else:
        print("\nBrowse it:")
    for page in pages:
        _print_pages(page)


def _server_base(tracking_uri: str) -> str | None:
    """An MLflow server's address without credentials (``None`` for a database store)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"), "", ""))


def _print_pages(page: StudyPages) -> None:
    print(f"  runs of {page.experiment!r}: {page.runs}")
    if page.front_plot is not None:
        print(f"  its Pareto front plot: {page.front_plot}")
    if page.models is not None:
        print(f"  its models: {page.models}")


def ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI, print the runs page of the spec's study (or of every study, the most
    recent first) once it answers, and open that page in a browser if there is one."""
    import subprocess

    from mlflow import MlflowClient

    from tradeoff_search.device import is_loopback
    from tradeoff_search.tracking import study_pages

    if not is_loopback(args.host):
        print(f"warning: --host {args.host}: the MLflow UI has no authentication; anyone who reaches this "
              "address can read and change every record in it", file=sys.stderr)  # fmt: skip
    spec = StudySpec.load(args.spec) if args.spec else None
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
