"""Screening a candidate against the budgets before it is trained: each budget's excess, the
trial's constraints (:func:`budget_excess`), and, before it is even built, containment.

A candidate of a built-in family containing a model the study already timed over the latency
budget (see :func:`~tradeoff_search.space._families.contains`) is over it too. A user builder's
model is always timed: its structure proves nothing. RAM and flash are measured, not inferred:
the minimum arena of a wider model is not always larger (the runtime's planner reuses buffers),
and both take a fraction of a conversion to measure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tradeoff_search.cost._convert import quantization_of
from tradeoff_search.cost._memory import ARENA_CEILING, REFUSED_RAM_BYTES, NotDeployable, RamMeasurement
from tradeoff_search.record._keys import (
    CONTAINS_TRIAL,
    FLASH_CONSTRAINT,
    LATENCY,
    LATENCY_CONSTRAINT,
    NORMALIZED_MS,
    RAM_BYTES,
    RAM_CONSTRAINT,
    TRAINED,
)
from tradeoff_search.space._builders import Builder, Family
from tradeoff_search.space._families import contains
from tradeoff_search.space._space import Candidate, family_floors, suggest_architecture, suggest_recipe
from tradeoff_search.spec._sections import FAMILIES, KB
from tradeoff_search.spec._spec import StudySpec

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contained:
    """A candidate containing ``inside``, a model the study timed over the budget in each of the
    candidate's modes: it is over the budget too, and neither built nor timed."""

    inside: optuna.trial.FrozenTrial

    @property
    def values(self) -> tuple[float, ...]:
        """Accuracy 0, and the latency and extras of the model inside: lower bounds of its own."""
        return (0.0, *self.inside.values[1:])

    def record(self, trial: optuna.Trial, spec: StudySpec) -> tuple[float, ...]:
        """Record ``trial`` as not trained, containing :attr:`inside`; returns its values."""
        suggest_recipe(trial, spec)  # recorded as for every trial
        trial.set_user_attr(CONTAINS_TRIAL, self.inside.number)
        assert spec.latency.budget_ms is not None, "containment needs a latency budget"
        # The other budgets' excesses of the model inside, as its values: lower bounds of its own.
        constraints = {**self.inside.constraints, LATENCY_CONSTRAINT: self.values[1] - spec.latency.budget_ms}
        return not_trained(trial, self.values, constraints, f"contains trial {self.inside.number}, which is ")


def screen(
    trial: optuna.Trial, spec: StudySpec, builder: Builder, modes: Sequence[str], input_shape: tuple[int, ...]
) -> Contained | None:
    """Whether ``trial``'s candidate is over the budget in every mode of ``modes`` by containment,
    without building it; None when it must be built (and timed) to tell."""
    if spec.latency.budget_ms is None or not isinstance(builder, Family):  # a structure containment knows
        return None
    architecture = builder.architecture(trial)
    inside = [_over_budget_inside(trial.study, spec, architecture, mode, input_shape) for mode in modes]
    smaller = inside[0]
    return Contained(smaller) if smaller is not None and all(inside) else None


def measures_ram(spec: StudySpec) -> bool:
    """Whether ``spec``'s trials measure RAM on the micro runtime: with a RAM budget or objective."""
    return spec.budget.ram_kb is not None or RAM_BYTES in spec.objectives.extra.choices


def budget_excess(
    spec: StudySpec, latency_ms: float, flash_bytes: int, ram: RamMeasurement | NotDeployable | None
) -> dict[str, float]:
    """A model's constraints: how far over each of ``spec``'s budgets it is (feasible when <= 0),
    in the budget's unit. Every trial of a study has the same ones (Optuna's GP sampler needs it).
    Measured RAM is held to ``[budget] ram_kb``, or else to the largest arena measured: a model
    the micro runtime cannot run (``ram`` a :class:`NotDeployable`) breaks it either way."""
    budget, excess = spec.budget, {}
    if spec.latency.budget_ms is not None:
        excess[LATENCY_CONSTRAINT] = latency_ms - spec.latency.budget_ms
    if ram is not None:
        needed_kb = (ram.arena_bytes if isinstance(ram, RamMeasurement) else REFUSED_RAM_BYTES) / KB
        excess[RAM_CONSTRAINT] = needed_kb - (budget.ram_kb if budget.ram_kb is not None else ARENA_CEILING / KB)
    if budget.flash_kb is not None:
        excess[FLASH_CONSTRAINT] = flash_bytes / KB - budget.flash_kb
    return excess


def not_trained(
    trial: optuna.Trial, values: tuple[float, ...], constraints: dict[str, float], why: str
) -> tuple[float, ...]:
    """Record an over-budget candidate: ``values`` are its accuracy (0), latency and extras,
    ``constraints`` its excess over each budget (see :func:`budget_excess`)."""
    for key, excess in constraints.items():
        trial.set_constraint(key, excess)
    trial.set_user_attr(TRAINED, False)
    over = ", ".join(f"{key} {excess:+.4g}" for key, excess in constraints.items() if excess > 0)
    _logger.info("trial %d: %sover budget (%s), not trained", trial.number, why, over)
    return values


def _over_budget_inside(
    study: optuna.Study, spec: StudySpec, candidate: Candidate, quantization: str, input_shape: tuple[int, ...]
) -> optuna.trial.FrozenTrial | None:
    """A finished trial of ``study`` timed over the budget, in the same quantization mode, whose
    model ``candidate`` contains (see :func:`contains`): ``candidate`` is then over it too."""
    runtime = spec.latency.runtime
    return next((past for past, smaller in timed_over_budget(study, spec, quantization)
                 if contains(candidate, smaller, runtime, input_shape)), None)  # fmt: skip


def timed_over_budget(
    study: optuna.Study, spec: StudySpec, quantization: str
) -> list[tuple[optuna.trial.FrozenTrial, Candidate]]:
    """The finished trials of built-in families of ``study`` timed over ``spec``'s latency budget
    (at its runtime, batch size and threads) in the ``quantization`` mode, with their architectures."""
    import optuna

    latency = spec.latency
    if latency.budget_ms is None:
        return []
    setting = (latency.runtime, latency.batch_sizes[0], latency.threads)
    found = []
    for past in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        timed, family = past.user_attrs.get(LATENCY), past.params.get("family")
        if (
            family not in FAMILIES  # a user builder's: its structure is its own
            or not isinstance(timed, dict)
            or (timed.get("runtime"), timed.get("batch_size"), timed.get("threads")) != setting
            or timed.get(NORMALIZED_MS, 0.0) <= latency.budget_ms
            or quantization_of(past.params) != quantization
        ):
            continue
        try:
            found.append((past, suggest_architecture(optuna.trial.FixedTrial(past.params), spec.model, family)))
        except ValueError:  # a trial of an earlier, different space
            continue
    return found


def ruled_out(study: optuna.Study, spec: StudySpec, family: str) -> bool:
    """Whether no candidate of ``family`` can meet the latency budget in any quantization mode: each
    contains a model of the study timed over it in its mode, because each contains one of the
    family's floors (see :func:`~tradeoff_search.space._space.family_floors`) and every floor contains one."""
    if family not in FAMILIES:  # a user builder: no proof about a structure it alone knows
        return False
    floors = family_floors(spec, family)
    if floors is None:
        return False
    runtime, shape = spec.latency.runtime, spec.data.input_shape
    for quantization in spec.latency.quantization.choices:
        timed = [smaller for _, smaller in timed_over_budget(study, spec, quantization) if smaller.family == family]
        if not timed or not all(any(contains(floor, s, runtime, shape) for s in timed) for floor in floors):
            return False
    return True
