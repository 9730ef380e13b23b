"""A failure of a store or a file as the one line a user can act on."""

from __future__ import annotations

import re

from tradeoff_search.rules import excerpt
from tradeoff_search.stores._urls import redact


def known_failure(error: BaseException) -> str | None:
    """One line for a failure of a store or a file that the user can act on (a full disk, a
    locked or read-only database, a file they may not write, an MLflow server that does not
    answer, another MLflow error), passwords hidden; None for anything else."""
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {error.filename or error.strerror}: free some space and run the command again"
    if isinstance(error, PermissionError):
        return f"permission denied: {error.filename or error}"
    module = type(error).__module__.partition(".")[0]
    if module not in ("mlflow", "sqlalchemy", "sqlite3", "psycopg", "psycopg2"):
        return None
    text = " ".join(str(error).split()) or type(error).__name__
    server = re.search(r"API request to (\S+?)/api/\S* failed with exception", text)
    if "database is locked" in text:
        text = "database is locked (another process holds it for too long); run the command again"
    elif server is not None:  # MLflow's client gave up after its retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES)
        # The socket's error: [Errno 111] Connection refused, or the last cause, as in
        # ConnectionResetError(104, 'Connection reset by peer'))) or RemoteDisconnected('Remote end closed …'))
        cause = re.search(r"\[Errno -?\d+\] ([^'\"()]+)|\w+\((?:-?\d+, )?'([^']+)'\)+$", text)
        text = f"the server {server[1]} does not answer" + (f" ({(cause[1] or cause[2]).strip()})" if cause else "")
    else:  # SQLAlchemy's statement (long, and it may quote data) and its advice are no use here
        text = re.sub(r"\s*\[SQL: .*|\s*\(Background on this error .*|^\(raised as a result of [^)]*\)\s*", "", text)
    # A store's message may quote its URL: hide its password and secret parameters.
    text = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", lambda url: redact(url[0]), text)
    what = "MLflow" if module == "mlflow" else "storage"
    return f"{what}: {excerpt(text, 300)}"
