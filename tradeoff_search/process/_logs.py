"""What reaches a console: the libraries' own loggers kept to their warnings, and what native code
prints (TensorFlow's and LiteRT's start-up lines) sent to a log file instead.

TensorFlow prints ``oneDNN custom operations are on…`` and ``All log messages before
absl::InitializeLog()…`` from C++, straight to file descriptor 2, before any Python logging is set
(``TF_CPP_MIN_LOG_LEVEL`` does not hold them back). Worker processes therefore write their whole
output to a log file (see :func:`tradeoff_search.study._supervision.run_worker_processes`); the ``run``
command sends its own descriptor 2 to one with :func:`native_output_to`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def quiet_libraries() -> None:
    """Keep the console for progress and results: libraries log only warnings."""
    import warnings

    import mlflow  # noqa: F401 - it sets its loggers' levels when imported; override after
    import optuna

    # `select` downloads the chosen model: MLflow would draw a progress bar of its files.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # With a server, MLflow prints "View run … at: URL" for every run it ends (sync: one per trial).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("tensorflow", "absl"):  # their warnings are about tracing and conversion internals
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def native_output_to(path: Path) -> Iterator[None]:
    """Within the block, what native code writes to descriptor 2 is appended to ``path``, while
    Python's ``sys.stderr`` (warnings, progress bar, tracebacks) stays on the console.

    Only when ``sys.stderr`` is this process's own descriptor 2: where it was replaced (pytest's
    capture, a notebook) nothing changes.
    """
    console = sys.stderr
    try:
        own = sys.__stderr__ is not None and console is sys.__stderr__ and console.fileno() == 2
    except (AttributeError, OSError, ValueError):  # no descriptor behind it
        own = False
    if not own:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    console.flush()
    saved = os.dup(2)
    sys.stderr = os.fdopen(saved, "w", buffering=1, encoding=console.encoding, errors=console.errors, closefd=False)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = console
