"""tradeoff_search: search Keras architectures × optimizers for accuracy vs measured latency.

The public API; the subpackages' ``_modules`` may change. Importing this package imports neither
TensorFlow nor MLflow: they load when a model is built or a run is logged.
"""

import os

# TensorFlow's C++ INFO/WARNING lines would drown the progress bar; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tradeoff_search.cost import LatencyStats, measure_latency
from tradeoff_search.data import Dataset, load_dataset
from tradeoff_search.rules import RunError, SpecError
from tradeoff_search.selection import Selection, select_model
from tradeoff_search.spec import StudySpec
from tradeoff_search.study import StoreFailed, WorkersFailed, run_study
from tradeoff_search.tracking import IntegrityError, MLflowParetoCallback, RecordIncomplete
from tradeoff_search.trial import TradeoffObjective

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "IntegrityError",
    "LatencyStats",
    "MLflowParetoCallback",
    "RecordIncomplete",
    "RunError",
    "Selection",
    "SpecError",
    "StoreFailed",
    "StudySpec",
    "TradeoffObjective",
    "WorkersFailed",
    "load_dataset",
    "measure_latency",
    "run_study",
    "select_model",
]
