"""Where a study's state lives: storage and tracking URLs (checks, redaction), the Optuna
storage with heartbeats, the storage-wide lock, a store's failure as one line; and Optuna's
internals behind one adapter (``_optuna_adapter``)."""

from tradeoff_search.stores._checks import check_stores, check_tracking_uri, has_optuna_tables
from tradeoff_search.stores._failures import known_failure
from tradeoff_search.stores._lock import storage_lock
from tradeoff_search.stores._storage import make_storage, open_storage
from tradeoff_search.stores._urls import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    STATE_DIR,
    STORAGE_ENV,
    TRACKING_ENV,
    prepare_local_state,
    redact,
    sqlite_path,
)

__all__ = [
    "DEFAULT_STORAGE",
    "DEFAULT_TRACKING_URI",
    "STATE_DIR",
    "STORAGE_ENV",
    "TRACKING_ENV",
    "check_stores",
    "check_tracking_uri",
    "has_optuna_tables",
    "known_failure",
    "make_storage",
    "open_storage",
    "prepare_local_state",
    "redact",
    "sqlite_path",
    "storage_lock",
]
