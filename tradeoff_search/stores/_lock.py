"""The lock every worker of one storage shares."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from tradeoff_search.spec._validation import ParameterError
from tradeoff_search.stores._urls import redact, sqlite_path


def lock_file(database: Path) -> Path:
    """The lock file of the SQLite file ``database``: its whole name and ``.lock`` (``optuna.db`` and
    ``optuna.sqlite`` beside it must not share one: a process holding both would wait for itself)."""
    return database.with_name(f"{database.name}.lock")


def symlinked(lock: Path) -> str:
    """What is expected of the lock file ``lock``, which is a symbolic link."""
    return f"a lock file that is not a symbolic link ({lock} is one)"


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """A lock shared by every worker of ``url``: a file lock beside a SQLite database, an advisory
    lock in PostgreSQL; other storages get none (their workers should not top up at once).

    Raises:
        ParameterError: the SQLite lock file is a symbolic link (never followed: it could make
            this process create or lock a file elsewhere).
    """
    if (database := sqlite_path(url)) is not None:
        import fcntl

        lock = lock_file(database)
        try:  # only its owner reads it; never through a link
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise ParameterError("storage_lock", "url", redact(url), symlinked(lock)) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)
    elif url.startswith("postgresql"):
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(f"tradeoff_search:{name}".encode()).digest()[:8], "big", signed=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            engine.dispose()
    else:
        yield
