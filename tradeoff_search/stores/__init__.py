"""Where a study's state lives: storage and tracking URLs (checks, redaction), the Optuna
storage with heartbeats, the storage-wide lock, and Optuna's internals behind one adapter."""

from tradeoff_search.stores._stores import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    STATE_DIR,
    STORAGE_ENV,
    TRACKING_ENV,
    check_stores,
    check_tracking_uri,
    known_failure,
    redact,
    storage_lock,
)

__all__ = [
    "DEFAULT_STORAGE",
    "DEFAULT_TRACKING_URI",
    "STATE_DIR",
    "STORAGE_ENV",
    "TRACKING_ENV",
    "check_stores",
    "check_tracking_uri",
    "known_failure",
    "redact",
    "storage_lock",
]
