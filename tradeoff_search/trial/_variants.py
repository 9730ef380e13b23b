"""One training, every mode its own trial: the quantization variants of a trained model.

With a list of modes in ``[latency] quantization``, the trial the sampler proposed trains its
model once, in its own (sampled) mode, as any trial does; the objective also converts that model
in every other mode of the list, times and scores each as shipped, and keeps them
here as :class:`Variant` (plain data, their model files staged under a provisional name). Once
the trained trial is told COMPLETE, :func:`add_variants` adds each to the study as a trial of its
own (``storage.create_new_trial`` with a template, as ``study.add_trial`` does, which does not
return the new trial's number): the same parameters but its ``quantization``, its values and
constraint, and the user attribute ``variant_of``, the number of the trial that trained it.

Why after the trained trial is told: a worker killed before leaves a FAIL trial (re-queued with
its parameters) and no variant of it, never a variant of a failed trial; one killed while adding
leaves some variants of a COMPLETE trial, each whole; adding again adds only the missing ones.
Killed between staging its variants' files and adding them, it leaves those files under their
provisional names for nobody: ``sync`` removes them (``_staging.drop_provisional``) once the trained
trial is finished and its worker gone, as it removes a trial's own staged model.
A variant whose mode the converter cannot apply is added FAIL with the reason, as a trial in that
mode would be. One not worth converting after training (see ``_timing.TimedModes.not_worth``: not
faster than the float32 model before training by a margin, or the float32 model itself) is added
PRUNED, without values, the reason in its ``prune_reason``: the sampler counts it as a poor
outcome of that mode for that architecture, and the record says why it has no accuracy.
A model over the latency budget in every mode is not trained; its variants are
added all the same, untrained with accuracy 0, so that containment (``_models.contains``) knows it
is over in each mode.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.cost._convert import quantization_of
from tradeoff_search.record._keys import FINISHED_ATTR, QUANTIZATION_PARAM, VARIANT_OF, WORKER_ATTR, WORKER_PROCESS_ATTR
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.stores._optuna_adapter import add_trial_from_template
from tradeoff_search.trial._staging import discard, rename_provisional
from tradeoff_search.trial._timing import WORTH_BELOW

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """A trained model in another mode: its values (None when its conversion failed, or when it
    was not converted: ``pruned``, the reason in its ``prune_reason``), user attributes and
    constraints, and its staged model files (if any) awaiting its trial number."""

    mode: str
    values: tuple[float, ...] | None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    staged: Path | None = None
    pruned: bool = False

    @property
    def state(self) -> optuna.trial.TrialState:
        import optuna

        if self.values is not None:
            return optuna.trial.TrialState.COMPLETE
        return optuna.trial.TrialState.PRUNED if self.pruned else optuna.trial.TrialState.FAIL


def describe_modes(spec: StudySpec) -> str | None:
    """The line ``run`` says of a study searching quantization modes (None for one mode): what
    ``n_trials`` counts, and which variants a training adds."""
    modes = spec.latency.quantization.choices
    if len(modes) == 1:
        return None
    margin = f" timed below {WORTH_BELOW}x the float32 model's latency" if "none" in modes else ""
    return (f"quantization searched in {', '.join(modes)}: n_trials = {spec.study.n_trials} counts trainings; "
            f"each training is also scored in the other modes{margin} (docs/quantization.md)")  # fmt: skip


def add_variants(study: optuna.Study, trained: optuna.trial.FrozenTrial, variants: Iterable[Variant]) -> list[int]:
    """Add the ``variants`` of ``trained`` to ``study`` (see the module docstring); returns their
    numbers. One already in the study (same ``variant_of`` and mode) is not added again; variants
    of a trial that did not complete are dropped with their staged files."""
    import optuna

    variants = list(variants)
    if trained.state != optuna.trial.TrialState.COMPLETE:
        for variant in variants:
            if variant.staged is not None:
                discard(variant.staged)
        return []
    trials = study.get_trials(deepcopy=False)
    present = {quantization_of(t.params) for t in trials if t.user_attrs.get(VARIANT_OF) == trained.number}
    distributions = dict(trained.distributions)
    # Whoever wrote the trained trial's MLflow run writes its variants' (see tracking.may_be_writing), from now.
    writer = {
        key: trained.system_attrs[key] for key in (WORKER_ATTR, WORKER_PROCESS_ATTR) if key in trained.system_attrs
    }
    writer[FINISHED_ATTR] = datetime.datetime.now(datetime.UTC).isoformat()
    added, missing = [], [variant for variant in variants if variant.mode not in present]
    for variant in missing:
        template = optuna.trial.create_trial(
            state=variant.state,
            values=variant.values,
            params={**trained.params, QUANTIZATION_PARAM: variant.mode},
            distributions=distributions,
            user_attrs={**variant.user_attrs, VARIANT_OF: trained.number},
            constraints=variant.constraints or None,
            system_attrs=writer,
        )
        number = add_trial_from_template(study, template)
        added.append(number)
        if variant.staged is not None and variant.staged.is_dir():
            rename_provisional(variant.staged, number)
    if added:
        modes = ", ".join(variant.mode for variant in missing)
        _logger.info("trial %d: its model in %s added as trials %s", trained.number, modes, ", ".join(map(str, added)))
    return added
