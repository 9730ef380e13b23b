"""The builder contract: ``build(trial, input_shape, n_classes) -> keras.Model``.

A builder is to this project what ``build(hp)`` is to Keras Tuner: it suggests its own
hyperparameters on the Optuna ``trial`` (define-by-run) and returns an **uncompiled** Keras model
taking examples of ``input_shape`` and ending in class probabilities (``n_classes`` softmax
units, or one sigmoid unit for two classes). The study does everything else: optimizer, schedule
and batch size, training, latency, the budget, the MLflow record and ``select``.

The built-in families are builders of this contract too (:class:`Family`); user builders are
plain functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tradeoff_search._models import build_model
from tradeoff_search._space import Candidate, suggest_architecture
from tradeoff_search._spec import ModelSection, StudySpec

if TYPE_CHECKING:
    import keras
    import optuna


class Builder(Protocol):
    """What a study calls to get a trial's model."""

    def __call__(self, trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model: ...


@dataclass(frozen=True)
class Family:
    """A built-in family (``mlp``, ``cnn1d``, ``cnn2d``, ``gru``) as a builder, its ranges from the
    spec's ``[model]``.

    Unlike a user builder, its structure is known: :meth:`architecture` is the plain-data
    :class:`Candidate` that containment reasons about (see ``tradeoff_search._models.contains``).

    Example:
        >>> build = Family("mlp", ModelSection())  # doctest: +SKIP
        >>> model = build(trial, (64,), 10)  # doctest: +SKIP
    """

    name: str
    space: ModelSection

    def architecture(self, trial: optuna.Trial) -> Candidate:
        """The trial's architecture of this family (suggested on ``trial``)."""
        return suggest_architecture(trial, self.space, self.name)

    def __call__(self, trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
        return build_model(self.architecture(trial), input_shape, n_classes)


def spec_builders(spec: StudySpec) -> dict[str, Builder]:
    """The builder of each family of ``spec``'s space, by family name."""
    return {name: Family(name, spec.model) for name in spec.model.families.choices}
