"""The lock every worker of one storage shares."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """A lock shared by every worker of ``url``: a file lock beside a SQLite database, an advisory
    lock in PostgreSQL; other storages get none (their workers should not top up at once)."""
    if url.startswith("sqlite:///"):
        import fcntl

        lock_path = Path(url.removeprefix("sqlite:///")).with_suffix(".lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
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
