"""The end-of-study report of a multi-objective study: the front as CSV, which hyperparameters
decide each objective, the figures (front, hypervolume, importances) and the front as a page to
explore (``_front_plot``). Plain data, ``matplotlib.figure.Figure`` objects and HTML, logged on
the study's parent run by :func:`log_report`."""

from __future__ import annotations

import csv
import functools
import io
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from tradeoff_search.cost._convert import quantization_of
from tradeoff_search.front import Front, completed_trials, is_feasible, metric_names
from tradeoff_search.record._keys import LATENCY_METRIC
from tradeoff_search.tracking._front_plot import FRONT_PAGE, front_page, plot_pareto

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

_logger = logging.getLogger(__name__)


def log_report(
    client: MlflowClient, run_id: str, study: optuna.Study, front: Front, reference: Sequence[float] | None
) -> None:
    """Log the report on run ``run_id``: ``pareto.csv``, ``param_importances.json``, the figures,
    and the front to explore (``pareto_front.html``) once a trial completed."""
    import matplotlib.pyplot as plt

    client.log_text(run_id, front_csv(front), "pareto.csv")
    if _any_completed(front):
        client.log_text(run_id, front_page(study, front, reference), FRONT_PAGE)
    importances = param_importances(study)
    if importances:
        client.log_dict(run_id, importances, "param_importances.json")
    for name, figure in report_figures(study, front, reference, importances).items():
        client.log_figure(run_id, figure, name)
        plt.close(figure)  # pyplot's, when it made it (the front plot); nothing for the others


def front_csv(front: Front) -> str:
    """The front as CSV: one row per Pareto trial (see :meth:`~tradeoff_search.front.Front.rows`)."""
    return _rows_to_csv(front.rows())


def report_figures(
    study: optuna.Study, front: Front, reference: Sequence[float] | None, importances: dict[str, dict[str, float]]
) -> dict[str, Figure]:
    """The report's figures by file name: the front and the hypervolume once a trial completed
    (the latter with a reference point), the importances when there are some."""
    figures = {}
    if _any_completed(front):
        figures["pareto_front.png"] = _front_figure(study)
        if reference is not None:
            figures["hypervolume.png"] = _hypervolume_figure(front.hypervolume_history(reference), reference)
    if importances:
        figures["param_importances.png"] = _importances_figure(importances)
    return figures


def _any_completed(front: Front) -> bool:
    import optuna

    return any(t.state == optuna.trial.TrialState.COMPLETE for t in front.trials)


def param_importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Per objective, how much each hyperparameter decides reaching its good values, over the
    feasible completed trials (Optuna's default evaluator, PED-ANOVA, which scores what leads to
    *low* values: maximized objectives are negated). Empty when too few trials share parameters."""
    import optuna

    feasible = [t for t in completed_trials(study) if is_feasible(t)]
    if len(feasible) < 3:
        return {}
    view = optuna.create_study(directions=study.directions)
    view.add_trials(feasible)
    importances = {}
    for i, name in enumerate(metric_names(study)):
        sign = -1.0 if study.directions[i] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        try:
            with warnings.catch_warnings():  # its notes on sign and sparse regimes: handled or expected here
                warnings.simplefilter("ignore", UserWarning)
                values = optuna.importance.get_param_importances(view, target=functools.partial(_signed, i, sign))
        except (ValueError, RuntimeError) as error:  # e.g. no parameter common to all trials
            _logger.warning("no importances for %s: %s", name, error)
            return {}
        importances[name] = {k: float(v) for k, v in values.items()}
    return importances


def _signed(index: int, sign: float, trial: optuna.trial.FrozenTrial) -> float:
    return sign * trial.values[index]


def _rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ---------------------------------------------------------------------- drawing
def _front_figure(study: optuna.Study) -> Figure:
    """Optuna's Pareto-front plot (feasible, infeasible and dominated trials told apart), drawn
    with pyplot (whose backend is the user's; :meth:`MLflowParetoCallback.finish` closes the figure
    once logged)."""
    import optuna

    axes, names = plot_pareto(optuna.visualization.matplotlib.plot_pareto_front, study)
    if len(names) == 2 and LATENCY_METRIC in names:  # latencies span orders of magnitude
        (axes.set_xscale if names.index(LATENCY_METRIC) == 0 else axes.set_yscale)("log")
    if len(names) == 2:
        _mark_quantized(axes, study)
    return cast("Figure", axes.figure)


_QUANTIZED_MARKERS = {"float16": "s", "dynamic": "D", "int8": "o"}


def _mark_quantized(axes: Any, study: optuna.Study) -> None:
    """Ring the quantized trials' points, one marker per mode, on a 2-objective front plot."""
    drawn = False
    for mode, marker in _QUANTIZED_MARKERS.items():
        points = [t.values[:2] for t in completed_trials(study) if quantization_of(t.params) == mode]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.scatter(xs, ys, marker=marker, s=90, facecolors="none", edgecolors="black", label=f"quantized: {mode}")
            drawn = True
    if drawn:
        axes.legend(fontsize="small")


def _hypervolume_figure(history: Sequence[tuple[int, float]], reference: Sequence[float]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))  # not pyplot's: no backend, no global state
    axes = figure.subplots()
    axes.step([n for n, _ in history], [v for _, v in history], where="post")
    axes.set(xlabel="trial", ylabel="hypervolume", title=f"Hypervolume (reference {list(reference)})")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _importances_figure(importances: dict[str, dict[str, float]]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(importances), 4))
    axes = figure.subplots(1, len(importances), squeeze=False)
    for axis, (objective, values) in zip(axes[0], importances.items(), strict=True):
        names = sorted(values, key=lambda n: values[n])
        axis.barh(names, [values[n] for n in names])
        axis.set(title=f"What decides {objective}", xlabel="importance (PED-ANOVA)")
    figure.tight_layout()
    return figure
