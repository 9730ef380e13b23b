"""Shipping a trained model: scored as the ``.tflite`` a deployment runs, staged for the MLflow
record, and its variants in the other quantization modes (see ``_variants``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff_search.cost._convert import Conversion, ConversionError, TracedModel, convert_as_shipped
from tradeoff_search.data import Dataset, preprocessing_file
from tradeoff_search.front._pareto import is_nondominated_by
from tradeoff_search.record._keys import (
    ACCURACY_FLOAT,
    CONVERSION_WARNINGS,
    FAIL_REASON,
    MODEL_DIGESTS_ATTR,
    PRUNE_REASON,
)
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.trial._staging import provisional_dir, stage, stage_model
from tradeoff_search.trial._timing import Timed, TimedModes
from tradeoff_search.trial._training import score, tflite_classes
from tradeoff_search.trial._variants import Variant

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Shipped:
    """A trained model as shipped in one mode: its accuracy objective and the user attributes it
    adds (``accuracy_float``, ``conversion_warnings``)."""

    accuracy: float
    user_attrs: dict[str, Any]


@dataclass
class Shipping:
    """Where one trial's trained model goes once trained.

    Attributes:
        spec: the study spec.
        data: its dataset (the validation split scores, the training split calibrates ``int8``).
        model_dir: where models that may be logged are staged (see ``_staging``); None: nowhere.
    """

    spec: StudySpec
    data: Dataset
    model_dir: Path | None
    # The study's front as shipping began: read once (every trial of the study, ~15–40 ms on
    # SQLite), not once for each mode's decisions.
    _front: list[tuple[float, ...]] | None = field(default=None, init=False, repr=False)

    def ship(
        self, trial: optuna.Trial, model: TracedModel, quantization: str, timed: Timed, accuracy_float: float
    ) -> tuple[float, ...]:
        """Score ``trial``'s trained ``model`` as shipped in its mode, record what goes with it and
        stage it if it may be logged; returns the trial's values."""
        conversion = self._conversion(model, quantization)
        shipped = self._shipped(conversion, accuracy_float)
        for key, value in shipped.user_attrs.items():
            trial.set_user_attr(key, value)
        values = timed.objectives(shipped.accuracy)
        if self.model_dir is not None and self._may_be_logged(trial, values):
            stage_model(trial, model.model, self.model_dir, self._file(model, conversion), self._preprocessing)
        return values

    def variants(
        self,
        trial: optuna.Trial,
        model: TracedModel,
        timed: TimedModes,
        accuracy_float: float | None,
        shared: dict[str, Any],
    ) -> list[Variant]:
        """The model of ``trial`` in each other mode, for ``TradeoffObjective.add_variants``:
        trained, scored as shipped (or not converted, see :meth:`TimedModes.not_worth`);
        untrained (``accuracy_float`` None, over the budget in every mode), accuracy 0.
        ``shared``: the user attributes they share with ``trial``."""
        modes = [*timed.others, *timed.unquantized]
        return [self._variant(trial, model, mode, timed, accuracy_float, shared) for mode in modes]

    def _variant(
        self,
        trial: optuna.Trial,
        model: TracedModel,
        mode: str,
        modes: TimedModes,
        accuracy_float: float | None,
        shared: dict[str, Any],
    ) -> Variant:
        timed = modes.others.get(mode, modes.float_model)  # an unquantized mode is the float32 model
        if isinstance(timed, ConversionError):
            return Variant(mode, None, {FAIL_REASON: f"ConversionError: {timed}"})
        assert timed is not None, "a mode is unquantized only beside the float32 model"
        constraints = timed.constraints
        if accuracy_float is None:
            return Variant(mode, timed.objectives(0.0), {**shared, **timed.user_attrs}, constraints)
        reason = modes.not_worth(mode) or self._dominated(trial, mode, timed, accuracy_float)
        if reason is not None:
            measured = {} if mode in modes.unquantized else timed.user_attrs
            return Variant(mode, None, {**shared, **measured, PRUNE_REASON: reason}, constraints, pruned=True)
        try:
            conversion = self._conversion(model, mode)
        except ConversionError as error:  # int8 calibrated on the trained model: its scales only change
            return Variant(mode, None, {FAIL_REASON: f"ConversionError: {error}"})
        shipped = self._shipped(conversion, accuracy_float)
        values = timed.objectives(shipped.accuracy)
        attrs = {**shared, **timed.user_attrs, **shipped.user_attrs}
        staged = None
        if self.model_dir is not None and self._may_be_logged(trial, values):
            staged = provisional_dir(self.model_dir, trial.number, mode)
            attrs[MODEL_DIGESTS_ATTR] = stage(staged, model.model, self._file(model, conversion), self._preprocessing)
        return Variant(mode, values, attrs, constraints, staged)

    def _dominated(self, trial: optuna.Trial, mode: str, timed: Timed, accuracy_float: float) -> str | None:
        """Why the trained model is not converted to ``mode`` though it is faster: at the float32
        model's accuracy (which a quantized model rarely beats) and the latency it was timed at, the
        study's front already dominates it. None for ``none``, whose score costs no conversion."""
        if mode == "none" or is_nondominated_by(
            timed.objectives(accuracy_float), self._front_of(trial), trial.study.directions
        ):
            return None
        return (f"not converted after training: at the float32 model's accuracy ({accuracy_float:.4f}) and its "
                f"latency before training ({timed.latency_ms:.4g} ms), the study's front dominates it")  # fmt: skip

    def _conversion(self, model: TracedModel, quantization: str) -> Conversion | None:
        """The trained ``model`` converted in ``quantization`` from its trace (with its signature,
        as a file to deploy), once for both its score and its staged file. None for ``none``: the
        float model is scored in Keras."""
        if quantization == "none":
            return None
        return convert_as_shipped(model, quantization, self.spec, self.data.x_train)

    def _shipped(self, conversion: Conversion | None, accuracy_float: float) -> Shipped:
        """The trained model as shipped in ``conversion``'s mode: the accuracy objective (a
        quantized model's ``.tflite`` as LiteRT runs it, on the whole validation split) and what
        to record beside it."""
        if conversion is None:
            return Shipped(accuracy_float, {})
        data = self.data
        accuracy = score(self.spec.objectives.accuracy, data.y_val, tflite_classes(conversion.flatbuffer, data.x_val))
        return Shipped(accuracy, {ACCURACY_FLOAT: accuracy_float, CONVERSION_WARNINGS: list(conversion.warnings)})

    def _file(self, model: TracedModel, conversion: Conversion | None) -> bytes:
        """The ``model.tflite`` to stage: the quantized file scored, or the float32 conversion."""
        if conversion is not None:
            return conversion.flatbuffer
        return convert_as_shipped(model, "none", self.spec, self.data.x_train).flatbuffer

    @property
    def _preprocessing(self) -> bytes | None:
        """The ``preprocessing.json`` a model trained on this data takes (a table's), else None."""
        return None if self.data.preprocessing is None else preprocessing_file(self.data.preprocessing)

    def _may_be_logged(self, trial: optuna.Trial, values: tuple[float, ...]) -> bool:
        """Whether the MLflow callback could log this model: with ``log_models = "pareto"``, a
        model already dominated by a finished trial will never be on the front."""
        if self.spec.tracking.log_models != "pareto":
            return self.spec.tracking.log_models == "all"
        return is_nondominated_by(values, self._front_of(trial), trial.study.directions)

    def _front_of(self, trial: optuna.Trial) -> list[tuple[float, ...]]:
        if self._front is None:
            self._front = [tuple(best.values) for best in trial.study.best_trials]
        return self._front
