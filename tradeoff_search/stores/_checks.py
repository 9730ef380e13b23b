"""Store URLs checked before anything is written: each must parse, have a scheme its library
takes, and be reachable, or one :class:`ParameterError` names the parameter (which the CLI shows
as its flag) and the redacted URL."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from tradeoff_search.spec._validation import ParameterError
from tradeoff_search.stores._lock import lock_file, symlinked
from tradeoff_search.stores._urls import STATE_DIR, ambiguous_credentials, redact, sqlite_path

if TYPE_CHECKING:
    import sqlite3

_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # with or without a driver: postgresql+psycopg
_TRACKING_SCHEMES = (*_DATABASES, "http", "https", "databricks")


def check_stores(storage: str, tracking_uri: str, function: str = "run_study") -> None:
    """Fail fast, before anything is loaded or written, on an Optuna storage or MLflow tracking
    URI that could not be used: each must parse, have a scheme its library takes, and be
    reachable (a SQLite file in an existing folder that is a database if it exists, and not both
    stores' file; a database server that answers; an MLflow server's ``/health``)."""
    _check_store(function, "storage", storage, _DATABASES)
    check_tracking_uri(tracking_uri, function, storage)


def _same_file(a: Path, b: Path) -> bool:
    """Whether the paths ``a`` and ``b`` name one file (through links too), existing or not."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_tracking_uri(uri: str, function: str = "run_study", storage: str | None = None) -> None:
    """:func:`check_stores` for the MLflow tracking URI alone (given ``storage``, not its SQLite file).

    A server is asked for ``/health`` (MLflow's own client would retry for minutes); MLflow 3.17
    no longer accepts plain-folder stores.
    """
    import http.client
    import urllib.error
    import urllib.request

    scheme = _check_store(function, "tracking_uri", uri, _TRACKING_SCHEMES)
    both = sqlite_path(storage or ""), sqlite_path(uri)
    if both[0] is not None and both[1] is not None and _same_file(both[0], both[1]):
        raise ParameterError(function, "tracking_uri", redact(uri),
                             f"a SQLite file other than the Optuna storage's ({both[1]} is both)")  # fmt: skip
    if scheme in ("http", "https"):
        # Credentials go to MLflow by MLFLOW_TRACKING_USERNAME/PASSWORD; the probe needs none.
        parts = urlsplit(uri)
        netloc = parts.netloc.rpartition("@")[2]
        health = urlunsplit((scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
        try:
            with urllib.request.urlopen(health, timeout=5) as answer:
                answer.read(64)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise ParameterError(
                function, "tracking_uri", redact(uri), f"a reachable MLflow server ({reason})"
            ) from None


def _check_store(function: str, key: str, url: str, schemes: tuple[str, ...]) -> str:
    """Parse ``url``, check its scheme is one of ``schemes`` and, for a database, that it can be
    used without writing to it; returns the scheme without its driver."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as error:
        raise ParameterError(function, key, redact(url), f"a valid URL ({error})") from None
    if ambiguous_credentials(url):  # SQLAlchemy would send part of it as the host name
        raise ParameterError(function, key, redact(url), "a URL whose password writes @ as %40")
    scheme = parts.scheme.partition("+")[0]
    if scheme not in schemes:
        example = "sqlite:///mlruns/optuna.db" if key == "storage" else "sqlite:///mlruns/mlflow.db or a server URL"
        raise ParameterError(function, key, redact(url), f"a URL of {', '.join(schemes)}, such as {example}")
    if scheme == "sqlite":
        _check_sqlite_file(function, key, url)
    elif scheme in _DATABASES:
        _probe_database(function, key, url)
    return scheme


def _check_sqlite_file(function: str, key: str, url: str) -> None:
    path = sqlite_path(url)
    if path is None:  # e.g. "sqlite://": SQLite in memory, gone with the process
        raise ParameterError(function, key, url, "a SQLite file, sqlite:///PATH")
    if path.parent != STATE_DIR and not path.parent.is_dir():  # mlruns/ itself is made for the defaults
        raise ParameterError(function, key, url, f"a SQLite file in an existing folder ({path.parent} is missing)")
    if path.exists() and not _is_sqlite_database(path):
        raise ParameterError(function, key, url, f"a SQLite database file ({path} is something else)")
    if lock_file(path).is_symlink():
        raise ParameterError(function, key, url, symlinked(lock_file(path)))


def _is_sqlite_database(path: Path) -> bool:
    """Whether SQLite reads the file ``path`` as a database (an empty file is an empty one).

    Asked of SQLite itself, never read with ``open()``: closing another descriptor of a database
    file drops every POSIX lock this process's SQLite connections hold on it, and another
    process may then checkpoint and delete a write-ahead log they still use, losing its writes
    (https://sqlite.org/howtocorrupt.html, 2.2; it happened: a rerun's trials lost after ``sync``
    had checked the file in a process that held the study open).
    """
    if not path.is_file():
        return False
    with _read_only(path) as database:
        return _reads_as_database(database)


def has_optuna_tables(path: Path) -> bool:
    """Whether the file ``path`` is a SQLite database holding Optuna's tables, asked on one
    read-only connection (as :func:`_is_sqlite_database` asks; opening a file that is not one would
    make it one). A database a writer has locked (another worker making its tables) is read once
    it lets go, within SQLite's usual 5 s."""
    if not path.is_file():
        return False
    with _read_only(path) as database:
        if not _reads_as_database(database):
            return False
        database.execute("PRAGMA busy_timeout = 5000")
        found = database.execute("select 1 from sqlite_master where type = 'table' and name = 'studies'")
        return found.fetchone() is not None


def _read_only(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A read-only connection to the SQLite file ``path`` that answers at once when it is locked
    (timeout 0), closed on leaving its ``with``."""
    import sqlite3

    return contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0))


def _reads_as_database(database: sqlite3.Connection) -> bool:
    """Whether ``database``'s file reads as a SQLite database; locked by a writer, it is one."""
    import sqlite3

    try:
        database.execute("PRAGMA schema_version").fetchone()
    except sqlite3.OperationalError as error:  # locked by a writer (another worker making its tables), or unreadable
        return "locked" in str(error)
    except sqlite3.DatabaseError:  # "file is not a database"
        return False
    return True


def _probe_database(function: str, key: str, url: str) -> None:
    """Connect once (5 s at most) and disconnect: a server that is down, or a wrong password,
    fails here with the database's own reason instead of after minutes of retries."""
    import sqlalchemy

    connect_args = {"connect_timeout": 5} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ParameterError(function, key, redact(url), f"a reachable database ({message})") from None
