"""The Optuna objective: trial → screen (budget) → build → time → train → ship → values."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tradeoff_search.cost._convert import suggest_quantization
from tradeoff_search.cost._device_client import DeviceUnreachable
from tradeoff_search.data._dataset import Dataset, load_dataset
from tradeoff_search.record._keys import DEVICE_FAILURE, EPOCHS, FAIL_REASON, TRACEBACK, TRAINED
from tradeoff_search.space._builders import Builder, Family, check_builders, searching, spec_builders
from tradeoff_search.space._space import suggest_family
from tradeoff_search.spec._builder_source import record_of
from tradeoff_search.spec._spec import StudySpec
from tradeoff_search.trial._build import build_candidate
from tradeoff_search.trial._screen import not_trained, screen
from tradeoff_search.trial._ship import Shipping
from tradeoff_search.trial._timing import Timing
from tradeoff_search.trial._train_step import train_candidate
from tradeoff_search.trial._variants import Variant
from tradeoff_search.trial._variants import add_variants as add_to_study

if TYPE_CHECKING:
    import optuna

_TRACEBACK_CHARS = 20_000  # the end of a longer one: where it failed


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

    Latency, flash and (with a RAM budget or objective) RAM on the micro runtime are measured
    before training (weights do not change them): with ``[budget]`` set (``latency_ms``, ``ram_kb``,
    ``flash_kb``), a candidate over any budget is not trained; it is recorded with each budget's
    excess as ``trial.set_constraint`` (so it never enters ``study.best_trials``) and accuracy 0.
    A candidate of a built-in family containing a model the study already timed over the latency
    budget (see :func:`tradeoff_search.space._families.contains`) is not even built: it gets that
    model's values and constraints, lower bounds of its own, and ``contains_trial``.
    A user builder's model is always timed: its structure proves nothing.

    Every model comes from a builder, ``builder(trial, input_shape, n_classes)`` (see
    ``tradeoff_search.space._builders``), checked against the contract; one that breaks it, or does not
    convert to LiteRT, fails its trial with the reason.

    With a list of quantization modes, a trained model is also scored in every other mode: each
    such variant is added as its own trial by :meth:`add_variants`, an Optuna callback to pass
    first (``study.optimize(objective, callbacks=[objective.add_variants])``).

    Each trial records user attributes: ``n_params``, ``macs`` (or ``macs_uncounted``), ``latency``
    (all statistics and the fingerprint), ``model_bytes`` (flash), ``ram_bytes`` (or
    ``ram_refusal``, naming the operator the micro runtime lacks) where RAM is measured,
    ``trained``, ``train_seconds``, ``epochs`` and ``history`` (per-epoch curves).

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
        self._timing = Timing(self.spec)
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
        return self._timing.calibrate(study)

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, ...]:
        """The trial as a pipeline: screen → build → time (→ budget) → train → ship."""
        data = self.data
        family = suggest_family(trial, self.spec)
        quantization = suggest_quantization(trial, self.spec)
        modes = self._modes(quantization)
        contained = screen(trial, self.spec, self.builders[family], modes, data.input_shape)
        if contained is not None:  # over in every mode: no need to build, convert or time it
            return contained.record(trial, self.spec)
        built = build_candidate(trial, self.spec, family, self.builders[family], data)
        timed = self._timing.time_modes(trial, built, modes, data.x_train)
        shipping = Shipping(self.spec, data, self.model_dir)
        if not timed.fits():  # trained only if some mode of it can meet the budgets
            # Its other modes are recorded over the budgets too: what containment and the sampler learn from.
            untrained = {**built.shared, TRAINED: False}
            self._pending[trial.number] = shipping.variants(trial, built.traced, timed, None, untrained)
            return not_trained(trial, timed.own.objectives(0.0), timed.own.constraints, "")
        for key, excess in timed.own.constraints.items():
            trial.set_constraint(key, excess)
        trained = train_candidate(trial, built, data, self.spec, timed)
        values = shipping.ship(trial, built.traced, quantization, timed.own, trained.accuracy_float)
        if timed.others or timed.unquantized:
            shared = {**built.shared, TRAINED: True, EPOCHS: trained.epochs}
            variants = shipping.variants(trial, built.traced, timed, trained.accuracy_float, shared)
            self._pending[trial.number] = variants
        return values

    def _modes(self, quantization: str) -> list[str]:
        """The modes a trial in ``quantization`` is evaluated in: its own first, then every other
        mode the spec searches (its variants, see ``tradeoff_search.trial._variants``)."""
        return [quantization, *(mode for mode in self.spec.latency.quantization.choices if mode != quantization)]

    def add_variants(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback, first of a study's callbacks: add the variants of ``trial`` (its
        trained model in the other modes the spec searches) to ``study`` as trials of their own,
        once ``trial`` is COMPLETE (see ``tradeoff_search.trial._variants``)."""
        pending = self._pending.pop(trial.number, None)
        if pending:
            add_to_study(study, trial, pending)


def _check_row_shape(spec: StudySpec, shape: tuple[int, ...]) -> None:
    """A user's arrays must have the rows the spec's ``data.input_shape`` says (which the spec
    checked against its families; without it, the spec has MLPs only, which take any rows)."""
    expected = spec.data.input_shape
    if expected is not None and shape != tuple(expected):
        raise ValueError(f"x_train: rows of shape {shape}, but the spec's data.input_shape is {list(expected)}: "
                         f"reshape x_train and x_val to (rows, {', '.join(map(str, expected))})")  # fmt: skip
