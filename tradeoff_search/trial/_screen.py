"""Screening a candidate against the latency budget before it is built: containment.

A candidate of a built-in family containing a model the study already timed over the budget
(see :func:`~tradeoff_search.space._families.contains`) is over it too. A user builder's model is
always timed: its structure proves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tradeoff_search.cost._convert import quantization_of
from tradeoff_search.record._keys import CONTAINS_TRIAL, LATENCY, LATENCY_CONSTRAINT, NORMALIZED_MS, TRAINED
from tradeoff_search.space._builders import Builder, Family
from tradeoff_search.space._families import contains
from tradeoff_search.space._space import Candidate, family_floors, suggest_architecture, suggest_recipe
from tradeoff_search.spec._sections import FAMILIES
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
        return not_trained(trial, spec, self.values, f"contains trial {self.inside.number}, which is ")


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


def not_trained(trial: optuna.Trial, spec: StudySpec, values: tuple[float, ...], why: str) -> tuple[float, ...]:
    """Record an over-budget candidate: ``values`` are its accuracy (0), latency and extras."""
    budget_ms = spec.latency.budget_ms
    assert budget_ms is not None, "only a study with a latency budget leaves candidates untrained"
    trial.set_constraint(LATENCY_CONSTRAINT, values[1] - budget_ms)
    trial.set_user_attr(TRAINED, False)
    _logger.info("trial %d: %s%.4f ms over the %.4f ms budget, not trained", trial.number, why,
                 values[1] - budget_ms, budget_ms)  # fmt: skip
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
