"""Where a study's state lives: storage and tracking URLs (checks, redaction), the Optuna
storage with heartbeats, and the storage-wide lock."""
