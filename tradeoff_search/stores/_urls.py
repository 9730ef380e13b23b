"""Where a study's state lives by default, the store URLs' environment variables, and URLs as
messages show them (passwords hidden)."""

from __future__ import annotations

import re
from pathlib import Path

STATE_DIR = Path("mlruns")
DEFAULT_STORAGE = f"sqlite:///{STATE_DIR}/optuna.db"
DEFAULT_TRACKING_URI = f"sqlite:///{STATE_DIR}/mlflow.db"

# Store URLs from the environment: a URL with a password belongs there, not on a command line.
STORAGE_ENV, TRACKING_ENV = "TRADEOFF_SEARCH_STORAGE", "MLFLOW_TRACKING_URI"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs), even if malformed.

    Parsed as SQLAlchemy parses the URLs it connects with (``make_url``), so every password it
    would send is hidden, also one holding ``/``, ``?`` or ``#`` (where ``urlsplit`` finds none);
    a URL it cannot parse has everything between ``//`` and its last ``@`` hidden.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return re.sub(r"(?<=//).*(?=@)", "***", url, count=1)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL (relative to the working directory unless absolute)."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def prepare_local_state(*urls: str) -> None:
    """Create ``mlruns/`` only when a local store will live right in it (not in a subfolder)."""
    if any(path.parent == STATE_DIR for path in map(sqlite_path, urls) if path is not None):
        STATE_DIR.mkdir(exist_ok=True)
