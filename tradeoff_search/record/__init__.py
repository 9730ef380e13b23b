"""The trial record: every name the Optuna storage holds for a trial or a study (user
attributes, metric names), so that no stage repeats its strings."""

from tradeoff_search.record._keys import FAIL_REASON, FLASH_CONSTRAINT, LATENCY_CONSTRAINT, RAM_CONSTRAINT, VARIANT_OF

__all__ = ["FAIL_REASON", "FLASH_CONSTRAINT", "LATENCY_CONSTRAINT", "RAM_CONSTRAINT", "VARIANT_OF"]
