"""MLflow as the browsable record of a study: a projection of the Optuna storage."""

from tradeoff_search.tracking._callback import MLflowParetoCallback
from tradeoff_search.tracking._mlflow_ui import StudyPages, study_pages
from tradeoff_search.tracking._repair import IntegrityError, RecordIncomplete
from tradeoff_search.tracking._report import param_importances

__all__ = [
    "IntegrityError",
    "MLflowParetoCallback",
    "RecordIncomplete",
    "StudyPages",
    "param_importances",
    "study_pages",
]
