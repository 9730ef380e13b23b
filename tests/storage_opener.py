"""What each process of test_workers' spawn pool runs: kept apart from test_workers, whose imports
(MLflow, pandas, the fixtures) would take every pool process seconds to load before its first task."""

from __future__ import annotations

import time


def open_at(url: str, start: float) -> str:
    """Open the Optuna storage ``url`` at the moment ``start`` (``time.time()``); say how it went."""
    from tradeoff_search import StudySpec
    from tradeoff_search.stores import make_storage

    spec = StudySpec.from_dict({"data": {"source": "sklearn:iris"}})
    time.sleep(max(0.0, start - time.time()))
    try:
        make_storage(spec, url)
    except Exception as error:
        return type(error).__name__
    return "opened"
