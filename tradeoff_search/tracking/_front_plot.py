"""The front as a page to explore: Optuna's own Pareto-front plot (plotly) whose points name their
trial on hover (number, family, size, quantization, objectives), the hypervolume history below
it, in one self-contained HTML file: plotly.js is inside (~4.6 MB), so MLflow's artifact viewer,
which runs the page's scripts, shows it without fetching anything.

Optuna draws 2 objectives in 2-D, 3 in 3-D (rotate, zoom); with more, the first two, as the PNG.
"""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tradeoff_search.cost._convert import quantization_of
from tradeoff_search.front import Front, LatencyUnit, front_latency_unit, metric_names
from tradeoff_search.record._keys import LATENCY_METRIC, MODEL_BYTES, N_PARAMS, VARIANT_OF

if TYPE_CHECKING:
    import optuna
    from plotly.graph_objects import Figure

FRONT_PAGE = "pareto_front.html"
_Plot = TypeVar("_Plot")
_NUMBER = re.compile(r'"number": (\d+)')  # in the hover text Optuna writes: the trial's JSON


def front_page(study: optuna.Study, front: Front, reference: Sequence[float] | None) -> str:
    """The page: the front, then the hypervolume history when there is a reference point."""
    figures = [front_figure(study, front)]
    if reference is not None:
        figures.append(_hypervolume_figure(front.hypervolume_history(reference)))
    body = "".join(
        figure.to_html(full_html=False, include_plotlyjs=index == 0, config={"displaylogo": False})
        for index, figure in enumerate(figures)
    )
    title = html.escape(f"Pareto front of study {study.study_name!r}")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head><body>{body}</body></html>\n'
    )


def plot_pareto(plot: Callable[..., _Plot], study: optuna.Study) -> tuple[_Plot, list[str]]:
    """Optuna's Pareto-front plot (``plot`` is its plotly or its matplotlib one) and the objectives
    drawn: Optuna draws 2 or 3; with more, the first two (accuracy and latency in our studies) show
    the front of all objectives projected on them."""
    import optuna

    names = list(metric_names(study))
    first_two = None
    if len(names) > 3:
        names, first_two = names[:2], lambda trial: trial.values[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return plot(study, targets=first_two, target_names=names), names


def front_figure(study: optuna.Study, front: Front) -> Figure:
    """Optuna's ``plot_pareto_front``, each point's hover text naming its trial (its number also
    the point's ``customdata``); latency on a log axis in 2-D."""
    import optuna

    figure, names = plot_pareto(optuna.visualization.plot_pareto_front, study)
    trials = {trial.number: trial for trial in front.trials}
    unit = front_latency_unit(front)
    for trace in figure.data:
        numbers = [int(match[1]) for match in map(_NUMBER.search, trace.text or ()) if match]
        hover = [_hover(trials[number], front, unit) for number in numbers]
        trace.update(customdata=numbers, text=hover, hovertemplate="%{text}<extra></extra>")
    if LATENCY_METRIC in names:
        _latency_in(figure, "xyz"[names.index(LATENCY_METRIC)], unit, log=len(names) == 2)
    figure.update_layout(title=f"Pareto front of {study.study_name}: hover a point for its trial", height=600)
    return figure


def _latency_in(figure: Figure, axis: str, unit: LatencyUnit, log: bool) -> None:
    """Show the latency axis in ``unit`` (plotly would write 0.00088 ms as ``880µ``), on a log
    scale in 2-D: latencies span orders of magnitude."""
    for trace in figure.data:
        trace.update({axis: [value * unit.per_ms for value in trace[axis]]})
    title = {"title": f"latency ({unit.symbol})", **({"type": "log"} if log else {})}
    if len(figure.data) and figure.data[0].type == "scatter3d":
        figure.update_layout(scene={f"{axis}axis": title})
    else:
        figure.update_layout({f"{axis}axis": title})


def _hover(trial: optuna.trial.FrozenTrial, front: Front, unit: LatencyUnit) -> str:
    """E.g. ``trial 26<br>mlp, 946 params, 3.2 kB<br>quantization none<br>accuracy 0.9667<br>latency
    0.6173 µs``, then ``re-timed 0.5877 µs`` once the front was re-timed side by side."""
    title = f"trial {trial.number}" + (
        f" (variant of {trial.user_attrs[VARIANT_OF]})" if VARIANT_OF in trial.user_attrs else ""
    )
    size = [f"{trial.user_attrs[N_PARAMS]} params"] if N_PARAMS in trial.user_attrs else []
    size += [f"{trial.user_attrs[MODEL_BYTES] / 1024:.1f} kB"] if MODEL_BYTES in trial.user_attrs else []
    lines = [
        title,
        ", ".join([str(trial.params.get("family", "model")), *size]),
        f"quantization {quantization_of(trial.params)}",
    ]
    for name, value in zip(front.metric_names, trial.values or (), strict=False):
        lines.append(
            f"latency {value * unit.per_ms:.4g} {unit.symbol}" if name == LATENCY_METRIC else f"{name} {value:.4g}"
        )
    if trial.number in front.retimed:
        lines.append(f"re-timed {front.retimed[trial.number] * unit.per_ms:.4g} {unit.symbol}")
    return "<br>".join(html.escape(line) for line in lines)


def _hypervolume_figure(history: Sequence[tuple[int, float]]) -> Figure:
    import plotly.graph_objects as go

    numbers, values = [n for n, _ in history], [v for _, v in history]
    trace: Any = go.Scatter(
        x=numbers, y=values, mode="lines+markers", line_shape="hv", customdata=numbers,
        hovertemplate="after trial %{x}: hypervolume %{y:.4g}<extra></extra>",
    )  # fmt: skip
    figure = go.Figure(trace)
    figure.update_layout(title="Hypervolume of the front, trial by trial (the parent run's metric)", height=380)
    figure.update_xaxes(title="trial")
    figure.update_yaxes(title="hypervolume")
    return figure
