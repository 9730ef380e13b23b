"""The Optuna objective: trial → builder → model → latency (+ budget) → training → values."""

from __future__ import annotations

import functools
import gc
import logging
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeoff_search.cost._convert import (
    Conversion,
    ConversionError,
    conversion_reason,
    convert_as_shipped,
    quantization_of,
    suggest_quantization,
)
from tradeoff_search.cost._device_client import DeviceUnreachable
from tradeoff_search.cost._harness import LOCAL
from tradeoff_search.cost._latency import LatencyStats, calibrate_reference, measure_latency
from tradeoff_search.data._dataset import Dataset, load_dataset
from tradeoff_search.front._pareto import is_nondominated_by
from tradeoff_search.record._keys import (
    ACCURACY_FLOAT,
    CONTAINS_TRIAL,
    CONVERSION_WARNINGS,
    DEVICE_FAILURE,
    EPOCHS,
    FAIL_REASON,
    HISTORY,
    LATENCY,
    LATENCY_CONSTRAINT,
    MACS,
    MACS_UNCOUNTED,
    MODEL_BYTES,
    MODEL_DIGESTS_ATTR,
    N_PARAMS,
    NORMALIZED_MS,
    PARAMS_METRIC,
    PRUNE_REASON,
    TRACEBACK,
    TRAIN_SECONDS,
    TRAINED,
    calibration_attr,
    latency_at_batch,
)
from tradeoff_search.space._builders import (
    Builder,
    BuilderError,
    Family,
    build_checked,
    check_builders,
    searching,
    spec_builders,
)
from tradeoff_search.space._families import contains, count_macs, uncounted_layers
from tradeoff_search.space._space import (
    Candidate,
    family_floors,
    suggest_architecture,
    suggest_family,
    suggest_recipe,
)
from tradeoff_search.spec._builder_source import record_of
from tradeoff_search.spec._sections import FAMILIES
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.trial._pruning import ParetoPruning, rivals
from tradeoff_search.trial._staging import provisional_dir, stage, stage_model
from tradeoff_search.trial._training import predict_classes, score, tflite_classes, train
from tradeoff_search.trial._variants import Variant
from tradeoff_search.trial._variants import add_variants as add_to_study

if TYPE_CHECKING:
    import keras
    import optuna

_logger = logging.getLogger(__name__)
_TRACEBACK_CHARS = 20_000  # the end of a longer one: where it failed


@dataclass(frozen=True)
class _Timed:
    """A model converted in one mode and timed (before training): its latency objective, its
    extra objectives, the user attributes it gives a trial, and whether it is over the budget."""

    latency_ms: float
    extras: tuple[float, ...]
    user_attrs: dict[str, Any]
    over_budget: bool


@dataclass(frozen=True)
class _Shipped:
    """A trained model as shipped in one mode: its accuracy objective and the user attributes it
    adds (``accuracy_float``, ``conversion_warnings``)."""

    accuracy: float
    user_attrs: dict[str, Any]


class TradeoffObjective:
    """An Optuna objective returning ``(accuracy, latency_ms)`` for a Keras model of the spec's space.

    Use it in any study whose directions are :attr:`directions`:

    .. code-block:: python

        import optuna
        from tradeoff_search import StudySpec, TradeoffObjective

        spec = StudySpec.load("studies/digits.toml")
        objective = TradeoffObjective(spec)  # or TradeoffObjective(spec, data=(x_train, y_train, x_val, y_val))
        study = optuna.create_study(directions=objective.directions)
        study.set_metric_names(objective.metric_names)  # names in plots and MLflow
        study.optimize(objective, n_trials=10)

    Latency is measured before training (weights do not change it): with ``latency.budget_ms`` set,
    an over-budget candidate is not trained; it is recorded with ``trial.set_constraint`` (so it
    never enters ``study.best_trials``) and accuracy 0. A candidate of a built-in family containing
    a model the study already timed over the budget (see :func:`tradeoff_search.space._families.contains`)
    is not even built: it gets that model's values, lower bounds of its own, and
    ``contains_trial``. A user builder's model is always timed: its structure proves nothing.

    Every model comes from a builder, ``builder(trial, input_shape, n_classes)`` (see
    ``tradeoff_search.space._builders``), checked against the contract; one that breaks it, or does not
    convert to LiteRT, fails its trial with the reason.

    With a list of quantization modes, a trained model is also scored in every other mode: each
    such variant is added as its own trial by :meth:`add_variants`, an Optuna callback to pass
    first (``study.optimize(objective, callbacks=[objective.add_variants])``).

    Each trial records user attributes: ``n_params``, ``macs`` (or ``macs_uncounted``), ``latency``
    (all statistics and the fingerprint), ``trained``, ``train_seconds``, ``epochs`` and
    ``history`` (per-epoch curves).

    Args:
        spec: the study spec (space, data, latency and training settings).
        data: arrays ``(x_train, y_train, x_val, y_val)`` or a :class:`Dataset` to use instead of
            the spec's data source.
        model_dir: if given, trained models that ``tracking.log_models`` may log are saved as
            ``trial-NNNN/model.keras`` and ``model.tflite`` under it (their sha256 in the trial's
            ``model_sha256``), for :class:`MLflowParetoCallback` to log.
        build: your own builder, ``build(trial, input_shape, n_classes) -> keras.Model`` (its
            family is named after the function), or a dict of them by family name, searched
            instead of the spec's ``[model]`` families. See :meth:`check_builders`.
    """

    def __init__(
        self,
        spec: StudySpec,
        data: Dataset | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
        model_dir: str | Path | None = None,
        build: Builder | Mapping[str, Builder] | None = None,
    ) -> None:
        if not isinstance(spec, StudySpec):
            raise TypeError(f"spec={spec!r}: expected a StudySpec, e.g. StudySpec.load(path)")
        if data is not None and not isinstance(data, tuple | Dataset):
            raise TypeError(f"data: expected (x_train, y_train, x_val, y_val) or a Dataset, got {type(data).__name__}")
        self.builders: dict[str, Builder] = spec_builders(spec, build)
        self.spec = spec if build is None else searching(spec, list(self.builders))
        self._data = Dataset.from_arrays(*data) if isinstance(data, tuple) else data
        if self._data is not None:
            _check_row_shape(spec, self._data.input_shape)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._pending: dict[int, list[Variant]] = {}  # trained trial: its variants, until it is told

    @property
    def builder_records(self) -> dict[str, dict[str, str]]:
        """What the study and its MLflow parent run keep of each user builder: its target, and its
        source file's path and hash (see :func:`~tradeoff_search.spec._builder_source.record_of`)."""
        sources = self.spec.builder_sources
        return {name: sources[name].record() if name in sources else record_of(builder)
                for name, builder in self.builders.items() if not isinstance(builder, Family)}  # fmt: skip

    def check_builders(self) -> None:
        """Build each user builder's model once on a throwaway trial, before any trial runs: it
        must return a Keras model taking the data's examples and ending in its class
        probabilities, suggest none of the names the study suggests around it (``family``,
        ``optimizer``, ``learning_rate``, …) and, with ``macs`` an objective, use layers whose
        multiply-adds are known. A model compiled with a loss is logged as ignored.

        Raises:
            SpecError: one line naming the builder (its spec key, or ``build``) and what is wrong.
        """
        if any(not isinstance(builder, Family) for builder in self.builders.values()):  # else no data needed
            check_builders(self.spec, self.builders, self.data, reloads=self.model_dir is not None)

    @property
    def directions(self) -> list[str]:
        return self.spec.directions

    @property
    def metric_names(self) -> list[str]:
        return self.spec.metric_names

    @property
    def data(self) -> Dataset:
        """The dataset, loaded from the spec on first use."""
        if self._data is None:
            self._data = load_dataset(self.spec)
        return self._data

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        import optuna

        directions = [d.name.lower() for d in trial.study.directions]
        if directions != self.directions:  # else accuracy could be minimized, or values refused after training
            raise ValueError(f"study directions {directions}: expected objective.directions, {self.directions}")
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except DeviceUnreachable as error:
            trial.set_user_attr(DEVICE_FAILURE, True)
            trial.set_user_attr(FAIL_REASON, str(error)[:2000])
            raise
        except Exception as error:
            # Optuna keeps no failure reason in its storage; the MLflow record shows these. The
            # traceback says where when the message says nothing useful.
            trial.set_user_attr(FAIL_REASON, f"{type(error).__name__}: {error}"[:2000])
            trial.set_user_attr(TRACEBACK, "".join(traceback.format_exception(error))[-_TRACEBACK_CHARS:])
            raise

    def calibrate(self, study: optuna.Study) -> dict[str, float]:
        """The study's latency calibration: the drift reference model's latency, measured once
        (by whichever trial or worker comes first) and stored in the study, so that every trial's
        ``latency_ms`` is in the same units. See :meth:`LatencyStats.normalized_ms`.

        Every batch size of the spec gets its own; this returns the objective's (the first)."""
        primary, *others = self.spec.latency.batch_sizes
        for batch_size in others:
            self._calibration(study, batch_size)
        return self._calibration(study, primary)

    def _calibration(self, study: optuna.Study, batch_size: int) -> dict[str, float]:
        spec = self.spec.latency
        settings: dict[str, Any] = {
            "runtime": spec.runtime,
            "batch_size": batch_size,
            "threads": spec.threads,
            "device": spec.device,
        }
        name = calibration_attr(batch_size, self.spec.latency.batch_sizes[0])
        stored = study.user_attrs.get(name)
        # Calibrations from before latency servers were all local.
        if stored is None or any({"device": LOCAL, **stored}.get(k) != v for k, v in settings.items()):
            stored = calibrate_reference(**settings)
            study.set_user_attr(name, stored)
            _logger.info(
                "latency calibration, batch %d: reference model %.4f ms (p10) on %s (%s)",
                batch_size,
                stored["p10_ms"],
                stored["cpu"],
                spec.device,
            )
        return stored

    def _measure(
        self, study: optuna.Study, model: keras.Model | bytes, batch_size: int, budget_ms: float | None = None
    ) -> tuple[LatencyStats, float]:
        """Time ``model`` at ``batch_size``: its statistics and its calibrated ``latency_ms``.
        With ``budget_ms``, timing stops as soon as the model is surely over it."""
        spec = self.spec.latency
        calibration_ms = self._calibration(study, batch_size)[f"{spec.statistic}_ms"]
        stats = measure_latency(
            model,
            runtime=spec.runtime,
            batch_size=batch_size,
            threads=spec.threads,
            statistic=spec.statistic,
            max_seconds=spec.max_seconds,
            stop_above_reference=None if budget_ms is None else budget_ms / calibration_ms,
            device=spec.device,
        )
        return stats, stats.normalized_ms(calibration_ms)

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, ...]:
        import keras
        import optuna

        data, latency_spec = self.data, self.spec.latency
        family = suggest_family(trial, self.spec)
        builder = self.builders[family]
        quantization = suggest_quantization(trial, self.spec)
        modes = self._modes(quantization)
        if latency_spec.budget_ms is not None and isinstance(builder, Family):  # a structure containment knows
            architecture = builder.architecture(trial)
            inside = [self._over_budget_inside(trial.study, architecture, mode) for mode in modes]
            smaller = inside[0]
            if smaller is not None and all(inside):  # over in every mode: no need to build, convert or time it
                suggest_recipe(trial, self.spec)  # recorded as for every trial
                trial.set_user_attr(CONTAINS_TRIAL, smaller.number)
                return self._not_trained(
                    trial, (0.0, *smaller.values[1:]), f"contains trial {smaller.number}, which is "
                )

        _freeze_long_lived_objects()
        # A fresh Keras state per trial keeps a long study's memory flat.
        keras.backend.clear_session(free_memory=True)
        keras.utils.set_random_seed(self.spec.study.seed + trial.number)
        model = build_checked(family, builder, trial, data)
        recipe = suggest_recipe(trial, self.spec)
        companions: dict[str, Any] = {PARAMS_METRIC: model.count_params(), MACS: self._macs(trial, model)}
        trial.set_user_attr(N_PARAMS, companions[PARAMS_METRIC])

        # Latency does not depend on the weights: time the mode's conversion before training. For
        # int8 it is calibrated on the untrained model, which changes its scales, not its operators.
        own = self._time(trial.study, family, model, quantization, companions)
        for key, value in own.user_attrs.items():
            trial.set_user_attr(key, value)
        others: dict[str, _Timed | ConversionError] = {}
        for mode in modes[1:]:  # the variants' modes (see _variants), timed before training too
            try:
                others[mode] = self._time(trial.study, family, model, mode, companions)
            except ConversionError as error:
                others[mode] = error
        shared = {key: value for key, value in trial.user_attrs.items() if key in (N_PARAMS, MACS, MACS_UNCOUNTED)}
        if latency_spec.budget_ms is not None:
            fits = [t for t in (own, *others.values()) if isinstance(t, _Timed) and not t.over_budget]
            if not fits:  # trained only if some mode of it can meet the budget
                # Its other modes are recorded over the budget too: what containment and the sampler learn from.
                untrained = {**shared, TRAINED: False}
                self._pending[trial.number] = [self._variant(trial, model, mode, timed, None, untrained)
                                               for mode, timed in others.items()]  # fmt: skip
                return self._not_trained(trial, (0.0, own.latency_ms, *own.extras), "")
            trial.set_constraint(LATENCY_CONSTRAINT, own.latency_ms - latency_spec.budget_ms)

        training = self.spec.training
        # Stopped early only if a rival dominates the model in every mode: at the best of each objective.
        timed = [(t.latency_ms, *t.extras) for t in (own, *others.values()) if isinstance(t, _Timed)]
        pruning = (
            ParetoPruning(tuple(map(min, zip(*timed, strict=True))), rivals(trial.study), training.pruning_margin)
            if training.pruning
            else None
        )
        result = train(model, recipe, data, training, on_epoch_end=pruning)
        trial.set_user_attr(TRAINED, True)
        trial.set_user_attr(TRAIN_SECONDS, result.seconds)
        trial.set_user_attr(EPOCHS, result.epochs)
        trial.set_user_attr(HISTORY, result.history)
        if pruning is not None and pruning.reason is not None:
            trial.set_user_attr(PRUNE_REASON, pruning.reason)  # for studies run by optimize() too
            raise optuna.TrialPruned(pruning.reason)
        accuracy_float = score(self.spec.objectives.accuracy, data.y_val, predict_classes(model, data.x_val))
        shipped = self._shipped(model, quantization, accuracy_float)
        for key, value in shipped.user_attrs.items():
            trial.set_user_attr(key, value)
        values = (shipped.accuracy, own.latency_ms, *own.extras)
        if self.model_dir is not None and self._may_be_logged(trial, values):
            stage_model(trial, model, self.model_dir, self._shipped_file(model, quantization))
        if others:
            shared.update({TRAINED: True, EPOCHS: result.epochs})
            self._pending[trial.number] = [self._variant(trial, model, mode, timed, accuracy_float, shared)
                                           for mode, timed in others.items()]  # fmt: skip
        return values

    def _modes(self, quantization: str) -> list[str]:
        """The modes a trial in ``quantization`` is evaluated in: its own first, then every other
        mode the spec searches (its variants, see ``tradeoff_search.trial._variants``)."""
        return [quantization, *(mode for mode in self.spec.latency.quantization.choices if mode != quantization)]

    def _time(
        self, study: optuna.Study, family: str, model: keras.Model, quantization: str, companions: dict[str, Any]
    ) -> _Timed:
        """Convert ``model`` in ``quantization`` and time it; further batch sizes only within the budget."""
        latency_spec = self.spec.latency
        conversion = self._convert(family, model, quantization)
        timed = conversion.flatbuffer if latency_spec.runtime == "litert" else model
        primary, *others = latency_spec.batch_sizes
        stats, latency_ms = self._measure(study, timed, primary, latency_spec.budget_ms)
        attrs: dict[str, Any] = {LATENCY: {**stats.to_dict(), NORMALIZED_MS: latency_ms},
                                 MODEL_BYTES: len(conversion.flatbuffer)}  # fmt: skip
        measured = {**companions, MODEL_BYTES: attrs[MODEL_BYTES]}
        extras = tuple(float(measured[name]) for name in self.spec.objectives.extra.choices)
        over = latency_spec.budget_ms is not None and latency_ms > latency_spec.budget_ms
        if not over:
            for batch_size in others:
                attrs[latency_at_batch(batch_size)] = self._measure(study, timed, batch_size)[1]
        return _Timed(latency_ms, extras, attrs, over)

    def _shipped(self, model: keras.Model, quantization: str, accuracy_float: float) -> _Shipped:
        """The trained ``model`` as shipped in ``quantization``: the accuracy objective (a
        quantized model's ``.tflite`` as LiteRT runs it, on the whole validation split) and what
        to record beside it."""
        if quantization == "none":
            return _Shipped(accuracy_float, {})
        data = self.data
        shipped = convert_as_shipped(model, quantization, self.spec, data.x_train, signature=False)
        accuracy = score(self.spec.objectives.accuracy, data.y_val, tflite_classes(shipped.flatbuffer, data.x_val))
        return _Shipped(accuracy, {ACCURACY_FLOAT: accuracy_float, CONVERSION_WARNINGS: list(shipped.warnings)})

    def _shipped_file(self, model: keras.Model, quantization: str) -> bytes:
        """The file to deploy the trained ``model`` in ``quantization`` (with its signature), as staged."""
        return convert_as_shipped(model, quantization, self.spec, self.data.x_train).flatbuffer

    def _variant(
        self,
        trial: optuna.Trial,
        model: keras.Model,
        mode: str,
        timed: _Timed | ConversionError,
        accuracy_float: float | None,
        shared: dict[str, Any],
    ) -> Variant:
        """The model of ``trial`` in another ``mode``, for :meth:`add_variants`: trained, scored as
        shipped; untrained (``accuracy_float`` None, over the budget in every mode), accuracy 0."""
        if isinstance(timed, ConversionError):
            return Variant(mode, None, {FAIL_REASON: f"ConversionError: {timed}"})
        budget_ms = self.spec.latency.budget_ms
        constraints = {} if budget_ms is None else {LATENCY_CONSTRAINT: timed.latency_ms - budget_ms}
        if accuracy_float is None:
            return Variant(mode, (0.0, timed.latency_ms, *timed.extras), {**shared, **timed.user_attrs}, constraints)
        try:
            shipped = self._shipped(model, mode, accuracy_float)
        except ConversionError as error:  # int8 calibrated on the trained model: its scales only change
            return Variant(mode, None, {FAIL_REASON: f"ConversionError: {error}"})
        values = (shipped.accuracy, timed.latency_ms, *timed.extras)
        attrs = {**shared, **timed.user_attrs, **shipped.user_attrs}
        staged = None
        if self.model_dir is not None and self._may_be_logged(trial, values):
            staged = provisional_dir(self.model_dir, trial.number, mode)
            attrs[MODEL_DIGESTS_ATTR] = stage(staged, model, self._shipped_file(model, mode))
        return Variant(mode, values, attrs, constraints, staged)

    def add_variants(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback, first of a study's callbacks: add the variants of ``trial`` (its
        trained model in the other modes the spec searches) to ``study`` as trials of their own,
        once ``trial`` is COMPLETE (see ``tradeoff_search.trial._variants``)."""
        pending = self._pending.pop(trial.number, None)
        if pending:
            add_to_study(study, trial, pending)

    def _convert(self, family: str, model: keras.Model, quantization: str) -> Conversion:
        """The LiteRT flatbuffer timed, in the trial's quantization mode. A mode the converter cannot
        apply to the model fails the trial with its reason (:class:`ConversionError`), and so does a
        user builder's model that does not convert at all; the study goes on."""
        try:
            return convert_as_shipped(model, quantization, self.spec, self.data.x_train, signature=False)
        except ConversionError:
            raise
        except Exception as error:  # the converter raises several kinds, with MLIR's reasons
            if isinstance(self.builders[family], Family):
                raise  # a built-in family's model that does not convert is a bug of ours
            reason = f"{type(error).__name__}: {conversion_reason(error)}"
            raise BuilderError(family, f"a model that converts to LiteRT ({reason})") from error

    def _macs(self, trial: optuna.Trial, model: keras.Model) -> int | None:
        """The model's multiply-adds, as user attribute ``macs``; unknown (None), the layers not
        counted go to ``macs_uncounted``, and a study minimizing ``macs`` cannot score the trial."""
        macs = count_macs(model)
        if macs is not None:
            trial.set_user_attr(MACS, macs)
            return macs
        uncounted = uncounted_layers(model)
        trial.set_user_attr(MACS_UNCOUNTED, uncounted)
        if MACS in self.spec.objectives.extra.choices:
            raise ValueError(f"macs unknown: no multiply-add count for layers {', '.join(uncounted)}; "
                             "drop macs from objectives.extra, or use standard layers")  # fmt: skip
        return None

    def _over_budget_inside(
        self, study: optuna.Study, candidate: Candidate, quantization: str
    ) -> optuna.trial.FrozenTrial | None:
        """A finished trial of ``study`` timed over the budget, in the same quantization mode, whose
        model ``candidate`` contains (see :func:`contains`): ``candidate`` is then over it too."""
        runtime, shape = self.spec.latency.runtime, self.data.input_shape
        return next((past for past, smaller in timed_over_budget(study, self.spec, quantization)
                     if contains(candidate, smaller, runtime, shape)), None)  # fmt: skip

    def _not_trained(self, trial: optuna.Trial, values: tuple[float, ...], why: str) -> tuple[float, ...]:
        """Record an over-budget candidate: ``values`` are its accuracy (0), latency and extras."""
        budget_ms = self.spec.latency.budget_ms
        assert budget_ms is not None, "only a study with a latency budget leaves candidates untrained"
        trial.set_constraint(LATENCY_CONSTRAINT, values[1] - budget_ms)
        trial.set_user_attr(TRAINED, False)
        _logger.info("trial %d: %s%.4f ms over the %.4f ms budget, not trained", trial.number, why,
                     values[1] - budget_ms, budget_ms)  # fmt: skip
        return values

    def _may_be_logged(self, trial: optuna.Trial, values: tuple[float, ...]) -> bool:
        """Whether the MLflow callback could log this model: with ``log_models = "pareto"``, a
        model already dominated by a finished trial will never be on the front."""
        if self.spec.tracking.log_models != "pareto":
            return self.spec.tracking.log_models == "all"
        front = [best.values for best in trial.study.best_trials]
        return is_nondominated_by(values, front, trial.study.directions)


def _check_row_shape(spec: StudySpec, shape: tuple[int, ...]) -> None:
    """A user's arrays must have the rows the spec's ``data.input_shape`` says (which the spec
    checked against its families; without it, the spec has MLPs only, which take any rows)."""
    expected = spec.data.input_shape
    if expected is not None and shape != tuple(expected):
        raise ValueError(f"x_train: rows of shape {shape}, but the spec's data.input_shape is {list(expected)}: "
                         f"reshape x_train and x_val to (rows, {', '.join(map(str, expected))})")  # fmt: skip


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


@functools.cache
def _freeze_long_lived_objects() -> None:
    """Move what is alive before the first trial (TensorFlow, Keras, the data: ~400k objects) out of
    the cyclic garbage collector's view, once per process.

    ``clear_session(free_memory=True)`` runs a full collection every trial; scanning those objects
    made it take ~0.22 s, and ~1 ms after freezing. Objects made later are still collected.
    """
    gc.collect()
    gc.freeze()
