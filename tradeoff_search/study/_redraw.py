"""A sampler that does not propose what the latency budget has already ruled out."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import optuna

_logger = logging.getLogger(__name__)

FAMILY = "family"


class RedrawingSampler(optuna.samplers.BaseSampler):
    """Wrap ``sampler``: an architecture ``family`` that ``ruled_out(study, family)`` is not proposed.

    With a latency budget, once every candidate of a family contains a model timed over it (on
    MNIST-1D at 10 µs: every GRU, as soon as the narrowest one is timed), proposing another spends
    a place among ``n_trials`` on a foregone rejection. Such a proposal is drawn again, up to
    ``attempts`` times, then its family is replaced by one of those left, at random (redrawing
    alone would not do: TPE favours a family it has seen little of, and one it is no longer shown
    stays one). The wrapped sampler makes every other choice and learns from every trial run.
    """

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler,
        ruled_out: Callable[[optuna.Study, str], bool],
        attempts: int = 3,
        seed: int | None = None,
    ) -> None:
        self.sampler = sampler
        self._ruled_out = ruled_out
        self._attempts = attempts
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._announced: set[str] = set()

    def __str__(self) -> str:
        return str(self.sampler)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        ruled_out = self._ruled_out_now(study)
        params = self._redrawn(lambda: self.sampler.sample_relative(study, trial, search_space), _family_in, ruled_out)
        if FAMILY in params:
            params[FAMILY] = self._left(study, trial, search_space[FAMILY], params[FAMILY], ruled_out)
        return params

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        def draw() -> Any:
            return self.sampler.sample_independent(study, trial, param_name, param_distribution)

        if param_name != FAMILY:
            return draw()
        ruled_out = self._ruled_out_now(study)
        return self._left(study, trial, param_distribution, self._redrawn(draw, str, ruled_out), ruled_out)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
        self._random.reseed_rng()

    def _redrawn(
        self, draw: Callable[[], Any], family_of: Callable[[Any], str | None], ruled_out: Callable[[str], bool]
    ) -> Any:
        """A draw whose family is not ruled out, or the last of ``attempts`` more."""
        drawn = draw()
        for _ in range(self._attempts):
            family = family_of(drawn)
            if family is None or not ruled_out(family):
                break
            drawn = draw()
        return drawn

    def _ruled_out_now(self, study: optuna.Study) -> Callable[[str], bool]:
        """``ruled_out`` for one proposal: the study does not change meanwhile, so each family is
        checked once (every check reads the study's trials)."""

        @functools.cache
        def ruled_out(family: str) -> bool:
            if not self._ruled_out(study, family):
                return False
            if family not in self._announced:
                _logger.info("no %s can meet the latency budget: the sampler proposes other families", family)
                self._announced.add(family)
            return True

        return ruled_out

    def _left(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        distribution: optuna.distributions.BaseDistribution,
        family: str,
        ruled_out: Callable[[str], bool],
    ) -> str:
        """``family`` if it is not ruled out; else one of the families left, at random (``family``
        if none is left)."""
        if not ruled_out(family):
            return family
        left = [choice for choice in getattr(distribution, "choices", ()) if not ruled_out(choice)]
        if not left:
            return family
        return self._random.sample_independent(study, trial, FAMILY, optuna.distributions.CategoricalDistribution(left))


def _family_in(params: dict[str, Any]) -> str | None:
    return params.get(FAMILY)
