"""Shipping a trained model: scored as the ``.tflite`` a deployment runs, staged for the MLflow
record, and its variants in the other quantization modes (see ``_variants``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.cost._convert import ConversionError, convert_as_shipped
from tradeoff_search.data import Dataset, preprocessing_file
from tradeoff_search.front._pareto import is_nondominated_by
from tradeoff_search.record._keys import (
    ACCURACY_FLOAT,
    CONVERSION_WARNINGS,
    FAIL_REASON,
    MODEL_DIGESTS_ATTR,
)
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.trial._staging import provisional_dir, stage, stage_model
from tradeoff_search.trial._timing import Timed
from tradeoff_search.trial._training import score, tflite_classes
from tradeoff_search.trial._variants import Variant

if TYPE_CHECKING:
    import keras
    import optuna


@dataclass(frozen=True)
class Shipped:
    """A trained model as shipped in one mode: its accuracy objective and the user attributes it
    adds (``accuracy_float``, ``conversion_warnings``)."""

    accuracy: float
    user_attrs: dict[str, Any]


@dataclass(frozen=True)
class Shipping:
    """Where a study's trained models go once trained.

    Attributes:
        spec: the study spec.
        data: its dataset (the validation split scores, the training split calibrates ``int8``).
        model_dir: where models that may be logged are staged (see ``_staging``); None: nowhere.
    """

    spec: StudySpec
    data: Dataset
    model_dir: Path | None

    def ship(
        self, trial: optuna.Trial, model: keras.Model, quantization: str, timed: Timed, accuracy_float: float
    ) -> tuple[float, ...]:
        """Score ``trial``'s trained ``model`` as shipped in its mode, record what goes with it and
        stage it if it may be logged; returns the trial's values."""
        shipped = self._shipped(model, quantization, accuracy_float)
        for key, value in shipped.user_attrs.items():
            trial.set_user_attr(key, value)
        values = timed.objectives(shipped.accuracy)
        if self.model_dir is not None and self._may_be_logged(trial, values):
            stage_model(trial, model, self.model_dir, self._file(model, quantization), self._preprocessing)
        return values

    def variants(
        self,
        trial: optuna.Trial,
        model: keras.Model,
        others: dict[str, Timed | ConversionError],
        accuracy_float: float | None,
        shared: dict[str, Any],
    ) -> list[Variant]:
        """The model of ``trial`` in each other mode, for ``TradeoffObjective.add_variants``:
        trained, scored as shipped; untrained (``accuracy_float`` None, over the budget in every
        mode), accuracy 0. ``shared``: the user attributes they share with ``trial``."""
        return [self._variant(trial, model, mode, timed, accuracy_float, shared) for mode, timed in others.items()]

    def _variant(
        self,
        trial: optuna.Trial,
        model: keras.Model,
        mode: str,
        timed: Timed | ConversionError,
        accuracy_float: float | None,
        shared: dict[str, Any],
    ) -> Variant:
        if isinstance(timed, ConversionError):
            return Variant(mode, None, {FAIL_REASON: f"ConversionError: {timed}"})
        constraints = timed.constraints
        if accuracy_float is None:
            return Variant(mode, timed.objectives(0.0), {**shared, **timed.user_attrs}, constraints)
        try:
            shipped = self._shipped(model, mode, accuracy_float)
        except ConversionError as error:  # int8 calibrated on the trained model: its scales only change
            return Variant(mode, None, {FAIL_REASON: f"ConversionError: {error}"})
        values = timed.objectives(shipped.accuracy)
        attrs = {**shared, **timed.user_attrs, **shipped.user_attrs}
        staged = None
        if self.model_dir is not None and self._may_be_logged(trial, values):
            staged = provisional_dir(self.model_dir, trial.number, mode)
            attrs[MODEL_DIGESTS_ATTR] = stage(staged, model, self._file(model, mode), self._preprocessing)
        return Variant(mode, values, attrs, constraints, staged)

    def _shipped(self, model: keras.Model, quantization: str, accuracy_float: float) -> Shipped:
        """The trained ``model`` as shipped in ``quantization``: the accuracy objective (a
        quantized model's ``.tflite`` as LiteRT runs it, on the whole validation split) and what
        to record beside it."""
        if quantization == "none":
            return Shipped(accuracy_float, {})
        data = self.data
        shipped = convert_as_shipped(model, quantization, self.spec, data.x_train, signature=False)
        accuracy = score(self.spec.objectives.accuracy, data.y_val, tflite_classes(shipped.flatbuffer, data.x_val))
        return Shipped(accuracy, {ACCURACY_FLOAT: accuracy_float, CONVERSION_WARNINGS: list(shipped.warnings)})

    def _file(self, model: keras.Model, quantization: str) -> bytes:
        """The file to deploy the trained ``model`` in ``quantization`` (with its signature), as staged."""
        return convert_as_shipped(model, quantization, self.spec, self.data.x_train).flatbuffer

    @property
    def _preprocessing(self) -> bytes | None:
        """The ``preprocessing.json`` a model trained on this data takes (a table's), else None."""
        return None if self.data.preprocessing is None else preprocessing_file(self.data.preprocessing)

    def _may_be_logged(self, trial: optuna.Trial, values: tuple[float, ...]) -> bool:
        """Whether the MLflow callback could log this model: with ``log_models = "pareto"``, a
        model already dominated by a finished trial will never be on the front."""
        if self.spec.tracking.log_models != "pareto":
            return self.spec.tracking.log_models == "all"
        front = [best.values for best in trial.study.best_trials]
        return is_nondominated_by(values, front, trial.study.directions)
