"""Re-time the Pareto set side by side in one process, once the study is done.

Trials are timed one at a time, minutes apart, maybe in other processes or on other workers;
drift control makes them comparable, and this final check times every front model in the same
rounds, against the same reference, so their order is as fair as a measurement can make it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tradeoff_search.cost._convert import convert_as_shipped, quantization_of
from tradeoff_search.cost._latency import measure_latencies
from tradeoff_search.front import Front
from tradeoff_search.record._keys import RETIMED_ATTR
from tradeoff_search.trial._timing import nonzero_as_trained

if TYPE_CHECKING:
    import optuna

    from tradeoff_search.trial._objective import TradeoffObjective

_logger = logging.getLogger(__name__)
T = TypeVar("T")


def retime_front(study: optuna.Study, objective: TradeoffObjective) -> dict[int, float]:
    """Time every Pareto-optimal trial's model side by side; store and return ``latency_ms`` by trial.

    Latency does not depend on the weights, so each model is rebuilt from its trial's parameters
    (and converted in its quantization mode, an ``int8`` one calibrated on the untrained model).
    The values go to the study's user attribute ``retimed_latency_ms`` (finished trials cannot be
    changed); a warning says so when the latency order of the front changed. A conversion not
    done within ``[latency] conversion_timeout`` gives the re-timing up (a warning; none stored).
    """
    import optuna

    front = Front.of(study)
    if len(front.best_trials) < 2:
        return {}
    spec, data = objective.spec, objective.data
    latency = spec.latency
    models = []
    for trial in front.best_trials:
        fixed = optuna.trial.FixedTrial(trial.params)
        model = objective.builders[trial.params["family"]](fixed, data.input_shape, data.n_classes)
        if latency.runtime == "litert":
            quantization = quantization_of(trial.params)
            conversion = functools.partial(convert_as_shipped, model, quantization, spec, data.x_train, signature=False)
            with nonzero_as_trained(model):  # as the trial timed it
                converted = _within(latency.conversion_timeout, conversion)
            if converted is None:
                _logger.warning("the front was not re-timed: the conversion to LiteRT of trial %d's model did "
                                "not finish within %g s (conversion_timeout)", trial.number,
                                latency.conversion_timeout)  # fmt: skip
                return {}
            model = converted.flatbuffer
        models.append(model)
    stats = measure_latencies(
        models,
        runtime=latency.runtime,
        batch_size=latency.batch_sizes[0],
        threads=latency.threads,
        statistic=latency.statistic,
        max_seconds=max(2.0, latency.max_seconds * len(models)),
        device=latency.device,
    )
    calibration = objective.calibrate(study)[f"{latency.statistic}_ms"]
    retimed = {t.number: s.normalized_ms(calibration) for t, s in zip(front.best_trials, stats, strict=True)}
    study.set_user_attr(RETIMED_ATTR, {str(number): value for number, value in retimed.items()})
    before = [t.number for t in front.best_trials]  # fastest first
    after = sorted(retimed, key=retimed.__getitem__)
    if before != after:
        left = sorted(set(before) - front.with_retimed(retimed).retimed_front)
        _logger.warning("re-timed side by side, the front's latency order changed: %s -> %s%s", before, after,
                        f"; dominated now, off the front: trials {left}" if left else "")  # fmt: skip
    return retimed


def _within(seconds: float, work: Callable[[], T]) -> T | None:
    """``work()``, or None if it has not returned within ``seconds``.

    In a thread of its own, left to itself when it overruns: nothing in a process can interrupt
    TensorFlow's converter (see :func:`~tradeoff_search.process.time_limit`), and the re-timing
    runs in the process that started the study, which must go on to finish its record. A daemon
    thread: it does not keep the process from exiting.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # raised in the caller's thread instead
            failure.append(error)

    thread = threading.Thread(target=run, name="retime-conversion", daemon=True)
    thread.start()
    thread.join(seconds)
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None
