"""What reaches a console: the libraries' own loggers kept to their warnings."""

from __future__ import annotations

import logging
import os


def quiet_libraries() -> None:
    """Keep the console for progress and results: libraries log only warnings."""
    import warnings

    import mlflow  # noqa: F401 - it sets its loggers' levels when imported; override after
    import optuna

    # `select` downloads the chosen model: MLflow would draw a progress bar of its files.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("tensorflow", "absl"):  # their warnings are about tracing and conversion internals
        logging.getLogger(name).setLevel(logging.ERROR)
