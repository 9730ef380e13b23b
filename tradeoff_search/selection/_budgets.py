"""Selection by budget: the most accurate model of the front within a latency, RAM and flash budget,
which of them binds, and the closest model when none fits.

A budget *binds* when lifting it alone would let a more accurate model of the front in. When the
more accurate models each break two budgets or more, they bind together. The candidates are the
front's models (those the study logs with ``log_models = "pareto"``): a model off the front of the
study's objectives may fit a RAM or flash budget the front's do not, so search with those costs as
objectives or budgets (``[budget]``) to select by them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from tradeoff_search.front import Front
from tradeoff_search.record._keys import MODEL_BYTES, RAM_BYTES, RAM_REFUSAL
from tradeoff_search.spec._sections import KB

if TYPE_CHECKING:
    import optuna

# Each budget: the parameter that gives it, what it limits, its unit.
BUDGETS = {"max_latency_ms": ("latency", "ms"), "max_ram_kb": ("RAM", "KB"), "max_flash_kb": ("flash", "KB")}


class Point(NamedTuple):
    """A model of the front and what it costs: latency (re-timed where the front was), RAM as the
    micro runtime allocates it (None: not measured, or ``ram_refusal`` says why it cannot run) and
    flash (the ``.tflite``'s bytes)."""

    trial: int
    accuracy: float
    latency_ms: float
    ram_bytes: float | None = None
    flash_bytes: float | None = None
    ram_refusal: str | None = None

    def cost(self, budget: str) -> float | None:
        """Its cost in the unit of ``budget`` (a key of :data:`BUDGETS`); None when unknown."""
        if budget == "max_latency_ms":
            return self.latency_ms
        value = self.ram_bytes if budget == "max_ram_kb" else self.flash_bytes
        return None if value is None else value / KB


@dataclass(frozen=True)
class Pick:
    """The chosen trial, and the budgets that keep a more accurate model out (see the module)."""

    trial: int
    binding: tuple[str, ...]  # keys of BUDGETS
    together: bool  # the binding budgets keep them out only together
    next_better: int | None  # the most accurate model they keep out


class NoneFits(ValueError):
    """No model of the front is within the budgets; ``budget`` is the one the closest breaks most."""

    def __init__(self, message: str, budget: str) -> None:
        super().__init__(message)
        self.budget = budget


def front_costs(study: optuna.Study) -> list[Point]:
    """The front to choose from with each model's costs: re-timed latencies once the front was
    re-timed, without the models those values dominate."""
    front = Front.of(study)
    points = []
    for trial in front.best_trials:
        if trial.number in front.retimed_front:
            attrs = trial.user_attrs
            latency = front.retimed.get(trial.number, trial.values[1])
            points.append(Point(trial.number, trial.values[0], latency, attrs.get(RAM_BYTES), attrs.get(MODEL_BYTES),
                                attrs.get(RAM_REFUSAL)))  # fmt: skip
    return points


def broken(point: Point, budgets: Mapping[str, float]) -> list[str]:
    """The budgets ``point`` breaks; an unknown cost breaks its budget (it cannot be shown to fit)."""
    return [name for name, limit in budgets.items() if (cost := point.cost(name)) is None or cost > limit]


def pick_within(points: Sequence[Point], budgets: Mapping[str, float]) -> Pick:
    """The most accurate of ``points`` within all ``budgets`` (keys of :data:`BUDGETS`), the
    faster of equals, and what binds.

    Raises:
        NoneFits: none is within them; the message names the closest.
    """
    fits = [p for p in points if not broken(p, budgets)]
    if not fits:
        raise _none_fits(points, budgets)
    chosen = max(fits, key=lambda p: (p.accuracy, -p.latency_ms))
    better = sorted((p for p in points if p.accuracy > chosen.accuracy), key=lambda p: -p.accuracy)
    alone = [p for p in better if len(broken(p, budgets)) == 1]
    if alone:
        binding = tuple(dict.fromkeys(broken(p, budgets)[0] for p in alone))
        return Pick(chosen.trial, binding, False, alone[0].trial)
    if better:
        return Pick(chosen.trial, tuple(broken(better[0], budgets)), True, better[0].trial)
    return Pick(chosen.trial, (), False, None)


def describe(budgets: Mapping[str, float]) -> str:
    """``budgets`` as words: ``0.002 ms latency, 16 KB RAM``."""
    return ", ".join(f"{limit:g} {BUDGETS[name][1]} {BUDGETS[name][0]}" for name, limit in budgets.items())


def binding_words(pick: Pick, points: Sequence[Point]) -> str:
    """What binds, for a person: ``RAM binds (trial 3, accuracy 0.93, needs 18.2 KB)``."""
    if not pick.binding:
        return "no budget binds: the front's most accurate model fits"
    better = next(p for p in points if p.trial == pick.next_better)
    needs = ", ".join(_cost_words(better, name) for name in pick.binding)
    names = " and ".join(BUDGETS[name][0] for name in pick.binding)
    verb = "bind together" if pick.together else ("binds" if len(pick.binding) == 1 else "each bind")
    return f"{names} {verb} (trial {better.trial}, accuracy {better.accuracy:.4f}, {needs})"


def _none_fits(points: Sequence[Point], budgets: Mapping[str, float]) -> NoneFits:
    """The error naming the closest model: the least excess over the budget it breaks most."""

    def excess(point: Point) -> tuple[float, float]:
        ratios = [(cost / budgets[name]) if (cost := point.cost(name)) is not None else float("inf")
                  for name in broken(point, budgets)]  # fmt: skip
        return max(ratios), -point.accuracy

    closest = min(points, key=excess)
    worst = max(broken(closest, budgets), key=lambda name: (closest.cost(name) or float("inf")) / budgets[name])
    costs = ", ".join(_cost_words(closest, name) for name in broken(closest, budgets))
    return NoneFits(f"no model of the front within {describe(budgets)}; closest: trial {closest.trial} "
                    f"(accuracy {closest.accuracy:.4f}, {costs})", worst)  # fmt: skip


def _cost_words(point: Point, budget: str) -> str:
    what, unit = BUDGETS[budget]
    cost = point.cost(budget)
    if cost is not None:
        return f"{what} {cost:.4g} {unit}"
    if budget == "max_ram_kb":
        return point.ram_refusal or "RAM not measured (the micro runtime was not installed)"
    return f"{what} not recorded"
