"""MLflow as the browsable record of a study: a projection of the Optuna storage."""

from tradeoff_search.tracking._callback import IntegrityError, MLflowParetoCallback, RecordIncomplete

__all__ = ["IntegrityError", "MLflowParetoCallback", "RecordIncomplete"]
