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

import dataclasses
import inspect
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tradeoff_search.rules import Categorical, SpecError
from tradeoff_search.space._families import build_model, count_macs, uncounted_layers
from tradeoff_search.space._space import RESERVED, Candidate, suggest_architecture
from tradeoff_search.spec._builder_source import load, one_line, record_of
from tradeoff_search.spec._sections import FAMILIES, ModelSection
from tradeoff_search.spec._spec import StudySpec

if TYPE_CHECKING:
    import keras
    import optuna

    from tradeoff_search.data._dataset import Dataset

_logger = logging.getLogger(__name__)


class Builder(Protocol):
    """What a study calls to get a trial's model."""

    def __call__(self, trial: optuna.trial.BaseTrial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model: ...


@dataclass(frozen=True)
class Family:
    """A built-in family (``mlp``, ``cnn1d``, ``cnn2d``, ``gru``) as a builder, its ranges from the
    spec's ``[model]``.

    Unlike a user builder, its structure is known: :meth:`architecture` is the plain-data
    :class:`Candidate` that containment reasons about (see ``tradeoff_search.space._families.contains``).

    Example:
        >>> build = Family("mlp", ModelSection())  # doctest: +SKIP
        >>> model = build(trial, (64,), 10)  # doctest: +SKIP
    """

    name: str
    space: ModelSection

    def architecture(self, trial: optuna.trial.BaseTrial) -> Candidate:
        """The trial's architecture of this family (suggested on ``trial``)."""
        return suggest_architecture(trial, self.space, self.name)

    def __call__(self, trial: optuna.trial.BaseTrial, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
        return build_model(self.architecture(trial), input_shape, n_classes)


def searching(spec: StudySpec, families: Sequence[str]) -> StudySpec:
    """``spec`` searching ``families`` (builders given in Python) instead of its ``[model]`` ones."""
    model = dataclasses.replace(spec.model, families=Categorical(tuple(families)), builder=None, builders=())
    return dataclasses.replace(spec, model=model)


def spec_builders(spec: StudySpec, build: Builder | Mapping[str, Builder] | None = None) -> dict[str, Builder]:
    """The builder of each family of the search, by family name: ``build`` (one builder, named
    after its function, or several by name) instead of the spec's ``[model]`` families if given.

    Raises:
        SpecError: a builder of the spec does not import or its function does not exist.
        TypeError: ``build`` is not a callable or a mapping of names to callables.
        ValueError: a name of ``build`` is not an identifier, or a built-in family's.
    """
    if build is None:
        return {name: Family(name, spec.model) if name in FAMILIES else _load(spec, name)
                for name in spec.model.families.choices}  # fmt: skip
    named = dict(build) if isinstance(build, Mapping) else {_name_of(build): build}
    for name, builder in named.items():
        if not callable(builder):
            raise TypeError(f"build: expected a function build(trial, input_shape, n_classes) or a dict of them "
                            f"by family name, got {type(builder).__name__}")  # fmt: skip
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or (name in FAMILIES and not isinstance(builder, Family))
        ):
            raise ValueError(f"build: family name {name!r}: expected an identifier not among the built-in "
                             f"families {list(FAMILIES)} (pass {{'my_name': builder}})")  # fmt: skip
    if not named:
        raise ValueError("build: expected at least one builder")
    return named


def keras_classes(builders: Iterable[Builder]) -> dict[str, type]:
    """The Keras classes that user builders' modules define or import (layers and models, and the
    initializers, regularizers and constraints a layer may hold), by class name: the
    ``custom_objects`` that loading a saved model of theirs needs. Keras finds a class registered
    with ``keras.saving.register_keras_serializable`` itself, an unregistered one only by this
    name (it imports no module a saved file names). Built-in families need none (nor Keras)."""
    users = (inspect.getmodule(builder) for builder in builders if not isinstance(builder, Family))
    modules = [module for module in users if module is not None]
    if not modules:
        return {}
    import keras

    kinds = (keras.layers.Layer, keras.initializers.Initializer, keras.regularizers.Regularizer,
             keras.constraints.Constraint)  # fmt: skip
    found: dict[str, type] = {}
    for module in modules:
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, kinds) and not value.__module__.startswith("keras"):
                found.setdefault(value.__name__, value)
    return found


def reload_breach(model: keras.Model, custom_objects: Mapping[str, type]) -> str | None:
    """What stops ``model`` from loading back from a ``.keras`` file, as the MLflow record and
    ``select`` load it (``safe_mode``, with ``custom_objects``, see :func:`keras_classes`); None if
    nothing does."""
    import tempfile
    from pathlib import Path

    import keras

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        try:
            model.save(path)
            keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)
        except Exception as error:  # Keras raises several kinds, naming the layer
            return (f"a model that saves and loads back as .keras, to log and ship it ({_keras_reason(error)}); "
                    "define or import your layers' classes in the builder's module, each with a get_config() "
                    "returning its __init__ arguments, or set tracking.log_models = 'none'")  # fmt: skip
    return None


def _keras_reason(error: Exception) -> str:
    """Keras's reason a model does not load, without the configs it quotes: the innermost
    ``Exception encountered: …`` of its nested messages, at most 300 characters."""
    text = " ".join(str(error).split())
    inner = re.findall(r"Exception encountered: (.*?)(?= Full object config:|$)", text)
    return f"{type(error).__name__}: {(inner[-1] if inner else text.split(' Full object config:')[0])[:300]}"


def _name_of(builder: Builder) -> str:
    name = getattr(builder, "name", None) if isinstance(builder, Family) else getattr(builder, "__name__", None)
    return name if isinstance(name, str) else type(builder).__name__


def _load(spec: StudySpec, name: str) -> Builder:
    source = spec.builder_sources[name]
    try:
        builder: Builder = load(source)
    except ValueError as error:
        raise SpecError(spec.path, spec.builder_key(name), source.target, str(error)) from None
    return builder


class BuilderError(ValueError):
    """A builder broke the contract: ``str()`` is one line naming it; ``expected`` says what it must do."""

    def __init__(self, name: str, expected: str) -> None:
        self.name, self.expected = name, expected
        super().__init__(f"builder {name!r}: expected {expected}")


def build_checked(name: str, builder: Builder, trial: optuna.trial.BaseTrial, data: Dataset) -> keras.Model:
    """``builder(trial, data.input_shape, data.n_classes)``, checked against the contract: a Keras
    model taking the data's examples and ending in its class probabilities.

    Raises:
        BuilderError: the builder raised, or its model breaks the contract (one line naming it).
    """
    import optuna

    try:
        model = builder(trial, data.input_shape, data.n_classes)
    except optuna.TrialPruned:
        raise
    except Exception as error:  # a user's builder may raise anything
        raise BuilderError(name, f"a builder that returns a model (it raised {one_line(error)})") from error
    problem = contract_breach(model, data)
    if problem is not None:
        raise BuilderError(name, problem)
    return model


def check_builders(spec: StudySpec, builders: Mapping[str, Builder], data: Dataset, reloads: bool) -> None:
    """Build each user builder's model once on a throwaway trial (see
    ``TradeoffObjective.check_builders``); built-in families need no check.

    Args:
        spec: the study spec (its seed, extra objectives and the builders' sources).
        builders: the builders by family name.
        data: the data their models take.
        reloads: whether their models are logged, and so must load back (see :func:`reload_breach`).

    Raises:
        SpecError: one line naming the builder (its spec key, or ``build``) and what is wrong.
    """
    import optuna

    custom_objects = keras_classes(builders.values())  # what the record and select load models with
    for name, builder in builders.items():
        if isinstance(builder, Family):
            continue
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.study.seed)).ask()
        try:
            model = build_checked(name, builder, trial, data)
            _check_own_params(name, trial)
        except BuilderError as error:
            raise _refusal(spec, name, builder, error.expected) from None
        breach = reload_breach(model, custom_objects) if reloads else None
        if breach is None and "macs" in spec.objectives.extra.choices and count_macs(model) is None:
            unknown = ", ".join(uncounted_layers(model))
            breach = f"layers whose multiply-adds are known, as macs is an objective ({unknown})"
        if breach is not None:
            raise _refusal(spec, name, builder, breach)
        loss = compiled_loss(model)
        if loss is not None:
            _logger.warning(
                "builder %r returns a model compiled with loss %r: ignored; trials train it with "
                "cross-entropy and the [optimizer] search (return it uncompiled)",
                name,
                loss,
            )


def _check_own_params(name: str, trial: optuna.Trial) -> None:
    taken = sorted(set(trial.params) & set(RESERVED))
    if taken:
        raise BuilderError(name, f"parameter names of its own ({', '.join(taken)} the study suggests itself)")


def _refusal(spec: StudySpec, name: str, builder: Builder, expected: str) -> SpecError:
    source = spec.builder_sources.get(name)
    if source is not None:
        return SpecError(spec.path, spec.builder_key(name), source.target, expected)
    return SpecError("build", name, record_of(builder)["target"], expected)


def contract_breach(model: object, data: Dataset) -> str | None:
    """What ``model`` lacks to be a builder's model for ``data``, as "expected …" text; None if
    nothing. A ``keras.Sequential`` without an ``Input`` is built for the data's examples."""
    import keras
    import numpy as np

    if not isinstance(model, keras.Model):
        return f"a keras.Model from build(trial, input_shape, n_classes) (it returned {type(model).__name__})"
    if isinstance(model, keras.Sequential) and not model.built:
        model.build((None, *data.input_shape))
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        return "a functional or Sequential model with its input declared (keras.Input(shape=input_shape))"
    if len(inputs) != 1 or len(outputs) != 1:
        return f"a model with one input and one output (it has {len(inputs)} and {len(outputs)})"
    shape, wanted = tuple(inputs[0].shape[1:]), tuple(data.input_shape)
    if len(shape) != len(wanted) or any(got not in (None, size) for got, size in zip(shape, wanted, strict=True)):
        return f"a model taking examples of shape {list(wanted)}, the data's (its input is {_shape(shape)})"
    width = 1 if data.n_classes == 2 else data.n_classes
    if tuple(outputs[0].shape[1:]) != (width,):
        head = "one sigmoid unit (2 classes)" if width == 1 else f"{width} class probabilities"
        return f"a model ending in {head} (its output is {_shape(tuple(outputs[0].shape[1:]))})"
    rows = np.asarray(model(np.asarray(data.x_val[:8], np.float32), training=False))
    sums = rows.sum(axis=-1)
    if (
        not np.all(np.isfinite(rows))
        or rows.min() < 0
        or rows.max() > 1
        or (width > 1 and np.abs(sums - 1).max() > 1e-3)
    ):
        seen = f"{rows.min():.3g} to {rows.max():.3g}, rows summing to {sums.min():.3g} to {sums.max():.3g}"
        return f"class probabilities out: a softmax, or a sigmoid for 2 classes (on data rows it gives {seen})"
    return None


def _shape(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("None" if size is None else str(size) for size in shape) + "]"


def compiled_loss(model: keras.Model) -> str | None:
    """The loss a builder compiled its model with, if it did (the study trains with its own)."""
    loss = getattr(model, "loss", None) if getattr(model, "compiled", False) else None
    if loss is None:
        return None
    return loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)
