"""Optuna's RDB storage with heartbeats, SQLite in write-ahead-log mode."""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from typing import TYPE_CHECKING, Any

from tradeoff_search.spec._spec import StudySpec

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

_SCHEMA_ATTEMPTS = 3


def make_storage(spec: StudySpec, url: str) -> optuna.storages.BaseStorage | str:
    """Optuna's RDB storage with heartbeats: a trial whose worker went silent for two heartbeats
    is failed and re-queued (at most twice) with the same parameters."""
    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return url
    return open_storage(url, spec.study.heartbeat_seconds)


def open_storage(url: str, heartbeat_seconds: int | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage of database ``url`` (see :func:`make_storage`), with heartbeats every
    ``heartbeat_seconds`` (none: a storage to read)."""
    import optuna
    import sqlalchemy

    # SQLite: several local workers write in turn; wait for the lock instead of failing.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    beat = heartbeat_seconds
    with warnings.catch_warnings():  # heartbeats are experimental in Optuna, and what crash safety needs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        open_rdb = functools.partial(
            optuna.storages.RDBStorage,
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=beat,
            grace_period=None if beat is None else 2 * beat,
            heartbeat_stale_trial_callback=None if beat is None else
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
        )  # fmt: skip
        for attempt in range(1, _SCHEMA_ATTEMPTS):
            # Workers started together on a fresh database race to create Optuna's tables and
            # stamp their version; the losers fail on a duplicate. Once created, they just open.
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                storage = open_rdb()
                break
            time.sleep(0.2 * attempt)
        else:
            storage = open_rdb()  # the last attempt raises what it meets
    if url.startswith("sqlite"):
        _write_ahead_log(storage.engine)
    return storage


def _write_ahead_log(engine: sqlalchemy.engine.Engine) -> None:
    """Put a SQLite study in write-ahead-log mode, syncing at checkpoints only.

    Optuna commits every parameter and attribute on its own (~15 per trial); with SQLite's
    default rollback journal each commit syncs the disk twice. In WAL mode a commit is one append
    and readers do not wait for the writer (local workers). A power cut may lose the last
    commits, never corrupt the file. Measured on a digits study: the proposals of a trial 39 → 22 ms,
    its attributes 22 → 14 ms.
    """
    import sqlalchemy

    def on_connect(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file: every process then uses it
        cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # the connections Optuna opened to create its tables get them on reconnect
