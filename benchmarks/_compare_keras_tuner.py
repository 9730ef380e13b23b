"""Keras Tuner for compare.py: the spec's search space as a ``kt.HyperModel``, and a RandomSearch
that notes when each trial completes.

The space is defined by ``tradeoff_search.space._space.suggest`` itself, answered by Keras Tuner's
HyperParameters instead of an Optuna trial: same names, ranges, log scales and choices, and the
same model builder and optimizer. Keras Tuner samples every hyperparameter it has seen in every
trial; a trial uses the ones its family and optimizer need (as Optuna's define-by-run does) and
ignores the others, which leaves random sampling of the used ones uniform as Optuna's.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from typing import Any

import keras
import tensorflow  # noqa: F401  (before the stand-in below: TensorFlow probes for TensorBoard itself)
from _compare_contenders import Budget, compile_like_a_user

from tradeoff_search import Dataset, StudySpec
from tradeoff_search.rules import Categorical
from tradeoff_search.space._families import build_model
from tradeoff_search.space._space import Candidate, Recipe, suggest_architecture, suggest_family, suggest_recipe


def _stand_in_for_tensorboard() -> None:
    """Keras Tuner 1.4.8 imports ``tensorboard.plugins.hparams.api`` in every trial, to patch a
    TensorBoard callback if there is one (there is none here), and tensorflow-cpu does not install
    TensorBoard. Empty modules answer that import, in this benchmark process only: the project
    does not depend on TensorBoard for the sake of a competitor."""
    if importlib.util.find_spec("tensorboard") is not None:
        return
    names = ("tensorboard", "tensorboard.plugins", "tensorboard.plugins.hparams", "tensorboard.plugins.hparams.api")
    for name in names:
        module = types.ModuleType(name)
        if name != names[-1]:
            module.__path__ = []  # a package, so that the next name imports from it
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


_stand_in_for_tensorboard()
import keras_tuner as kt  # noqa: E402


class _HyperParametersTrial:
    """Optuna's ``suggest_*`` answered by Keras Tuner ``HyperParameters`` (what ``suggest`` calls).

    With ``discovery = r``, every hyperparameter is registered and the answer forced: the r-th
    choice (cyclically) and the high end of integer ranges, so that a few rounds walk through
    every family, optimizer and layer index and register all names up front.
    """

    def __init__(self, hp: kt.HyperParameters, discovery: int | None = None) -> None:
        self.hp = hp
        self.discovery = discovery

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        if len(choices) == 1:
            value = self.hp.Fixed(name, choices[0])
        elif set(choices) == {False, True} and all(isinstance(c, bool) for c in choices):
            value = self.hp.Boolean(name, default=choices[0])  # Choice would turn them into 0 and 1
        else:
            value = self.hp.Choice(name, choices)
        return value if self.discovery is None else choices[self.discovery % len(choices)]

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        if low == high:
            value = self.hp.Fixed(name, low)
        else:
            value = self.hp.Int(name, low, high, sampling="log" if log else "linear")
        return value if self.discovery is None else high

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        if low == high:
            return self.hp.Fixed(name, low)
        return self.hp.Float(name, low, high, sampling="log" if log else "linear")


def suggest(trial: _HyperParametersTrial, spec: StudySpec) -> tuple[Candidate, Recipe]:
    """The spec's space as the objective suggests it: a family, its architecture, the recipe."""
    architecture = suggest_architecture(trial, spec.model, suggest_family(trial, spec))  # type: ignore[arg-type]
    return architecture, suggest_recipe(trial, spec)  # type: ignore[arg-type]


class SpaceHyperModel(kt.HyperModel):
    """The spec's space: ``suggest`` → ``build_model``, compiled and fitted as a user would."""

    def __init__(self, spec: StudySpec, data: Dataset) -> None:
        super().__init__(name="tradeoff_search_space")
        self.spec = spec
        self.data = data

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        sections = (self.spec.model, self.spec.optimizer, self.spec.training)
        rounds = max(len(v.choices) for s in sections for v in vars(s).values() if isinstance(v, Categorical))
        for discovery in range(rounds):
            suggest(_HyperParametersTrial(hp, discovery), self.spec)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        candidate, recipe = suggest(_HyperParametersTrial(hp), self.spec)
        model = build_model(candidate, self.data.input_shape, self.data.n_classes)
        compile_like_a_user(model, recipe, self.data, self.spec.training)
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
        _, recipe = suggest(_HyperParametersTrial(hp), self.spec)
        return model.fit(*args, batch_size=recipe.batch_size, **kwargs)


class TimedRandomSearch(kt.RandomSearch):
    """``RandomSearch`` that notes the wall-clock time each trial completes (Keras Tuner keeps none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.completed: dict[str, float] = {}

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)  # scores and ends the trial in the oracle
        if self.oracle.get_trial(trial.trial_id).status == "COMPLETED":
            self.completed[trial.trial_id] = time.time()


class DeadlineStop(keras.callbacks.Callback):
    """Ends the search after each training batch once the budget has expired, in case the alarm's
    interrupt was dropped (Keras Tuner has no time budget of its own, and a trial can run for minutes)."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self.budget = budget

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.budget.expired:
            raise KeyboardInterrupt
