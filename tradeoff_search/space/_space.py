"""The search space as plain data: a built-in family's :class:`Candidate`, every trial's :class:`Recipe`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradeoff_search.record._keys import QUANTIZATION_PARAM
from tradeoff_search.rules import Categorical, FloatRange, IntRange
from tradeoff_search.spec._sections import FAMILIES, ModelSection
from tradeoff_search.spec._spec import StudySpec

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Candidate:
    """One architecture of a built-in family (what :class:`~tradeoff_search.space._builders.Family`
    suggests and builds, and what containment reasons about)."""

    units: tuple[int, ...]  # mlp: units per hidden layer
    activation: str
    dropout: float
    batch_norm: bool
    family: str = "mlp"
    filters: tuple[int, ...] = ()  # cnn1d/cnn2d: filters per convolution block
    kernel_size: int | None = None
    downsample: str | None = None  # after each block: "max" pooling, "stride" 2, or "none"
    residual: bool | None = None
    gru_units: tuple[int, ...] = ()  # gru: units per recurrent layer

    @property
    def widths(self) -> tuple[int, ...]:
        """Units, filters or GRU units per layer, whichever the family has."""
        return self.units or self.filters or self.gru_units

    @property
    def n_layers(self) -> int:
        return len(self.widths)


@dataclass(frozen=True)
class Recipe:
    """How a trial's model is trained: the optimizer part of the space, the same for every family."""

    optimizer: str
    learning_rate: float
    schedule: str
    batch_size: int
    weight_decay: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None


# Per family: the parameter of its depth and the one of each layer's width (a Candidate field too).
_LAYERS = {"mlp": ("n_layers", "units"), "cnn1d": ("conv_blocks", "filters"), "cnn2d": ("conv_blocks", "filters"),
           "gru": ("gru_layers", "gru_units")}  # fmt: skip

# The parameters the study suggests around any builder; a builder's own may not reuse them.
RESERVED = ("family", "optimizer", "learning_rate", "schedule", "batch_size", "weight_decay", "momentum", "nesterov",
            QUANTIZATION_PARAM)  # fmt: skip


def _suggest(trial: optuna.trial.BaseTrial, name: str, value: IntRange | FloatRange | Categorical) -> Any:
    if isinstance(value, Categorical):
        return trial.suggest_categorical(name, list(value.choices))
    if isinstance(value, IntRange):
        return trial.suggest_int(name, value.low, value.high, log=value.log)
    return trial.suggest_float(name, value.low, value.high, log=value.log)


def suggest_family(trial: optuna.trial.BaseTrial, spec: StudySpec) -> str:
    """The trial's architecture family (a built-in family or a user builder's name)."""
    family: str = _suggest(trial, "family", spec.model.families)
    return family


def suggest_architecture(trial: optuna.trial.BaseTrial, model: ModelSection, family: str) -> Candidate:
    """Ask ``trial`` for an architecture of the built-in ``family``, define-by-run: widths per
    layer (``units_0``, ``filters_1``, ``gru_units_0``, …), kernel, downsampling and residual
    connections for CNNs, activation, dropout, and batch norm for mlp and cnn."""
    depth, width = _LAYERS[family]
    n_layers = _suggest(trial, depth, getattr(model, depth))
    architecture: dict[str, Any] = {
        "family": family,
        "units": (),
        width: tuple(_suggest(trial, f"{width}_{i}", getattr(model, width)) for i in range(n_layers)),
    }
    if family in ("cnn1d", "cnn2d"):
        architecture["kernel_size"] = _suggest(trial, "kernel_size", model.kernel_size)
        architecture["downsample"] = _suggest(trial, "downsample", model.downsample)
        architecture["residual"] = _suggest(trial, "residual", model.residual)
    return Candidate(
        **architecture,
        activation=_suggest(trial, "activation", model.activation),
        dropout=_suggest(trial, "dropout", model.dropout),
        batch_norm=_suggest(trial, "batch_norm", model.batch_norm) if family != "gru" else False,
    )


def suggest_recipe(trial: optuna.trial.BaseTrial, spec: StudySpec) -> Recipe:
    """Ask ``trial`` for the optimizer, its learning rate and schedule, and the batch size;
    ``weight_decay`` only for ``adamw`` (for Keras' other optimizers it would turn ``adam`` into a
    copy of ``adamw``); ``momentum`` for ``sgd`` and ``rmsprop``; ``nesterov`` for ``sgd``."""
    opt = spec.optimizer
    optimizer = _suggest(trial, "optimizer", opt.name)
    return Recipe(
        optimizer=optimizer,
        learning_rate=_suggest(trial, "learning_rate", opt.learning_rate),
        schedule=_suggest(trial, "schedule", opt.schedule),
        batch_size=_suggest(trial, "batch_size", spec.training.batch_size),
        weight_decay=_suggest(trial, "weight_decay", opt.weight_decay) if optimizer == "adamw" else None,
        momentum=_suggest(trial, "momentum", opt.momentum) if optimizer in ("sgd", "rmsprop") else None,
        nesterov=_suggest(trial, "nesterov", opt.nesterov) if optimizer == "sgd" else None,
    )


def narrowest_models(spec: StudySpec) -> list[dict[str, Any]]:
    """The shallowest, narrowest architecture of each built-in family of the space, as trial
    parameters (the other knobs are left to the sampler): each family's candidates contain it (see
    ``tradeoff_search.space._families.contains``) whenever they share its operators. User builders have
    none: their structure is theirs."""
    models = []
    for family in spec.model.families.choices:
        if family not in FAMILIES:
            continue
        depth, width = _LAYERS[family]
        n_layers = _lowest(getattr(spec.model, depth))
        models.append(
            {"family": family, depth: n_layers}
            | {f"{width}_{i}": _lowest(getattr(spec.model, width)) for i in range(n_layers)}
        )
    return models


def family_floors(spec: StudySpec, family: str) -> list[Candidate] | None:
    """The shallowest, narrowest architectures of ``family`` in ``spec``'s space, one per combination
    of its operator choices: every candidate of the family contains the one with its own operators
    (see ``tradeoff_search.space._families.contains``). Dropout is left at 0: no part of containment.

    None where narrowest is not least: residual CNNs that may have blocks exactly as wide as the
    input's channels, as such a block has no shortcut projection where a narrower one has.
    """
    model = spec.model
    depth, width = _LAYERS[family]
    widths = (_lowest(getattr(model, width)),) * _lowest(getattr(model, depth))
    cnn = family in ("cnn1d", "cnn2d")
    channels = spec.data.input_shape[-1] if cnn and spec.data.input_shape else None
    if (
        channels is not None
        and True in model.residual.choices
        and channels > widths[0]
        and _allows(getattr(model, width), channels)
    ):
        return None
    operators = itertools.product(
        model.activation.choices,
        model.batch_norm.choices if family != "gru" else (False,),
        model.kernel_size.choices if cnn else (None,),
        model.downsample.choices if cnn else (None,),
        model.residual.choices if cnn else (None,),
    )
    architecture = {"family": family, "units": (), width: widths}
    return [
        Candidate(
            **architecture,
            dropout=0.0,
            activation=activation,
            batch_norm=norm,
            kernel_size=kernel,
            downsample=down,
            residual=residual,
        )
        for activation, norm, kernel, down, residual in operators
    ]


def _lowest(value: IntRange | Categorical) -> Any:
    return value.low if isinstance(value, IntRange) else min(value.choices)


def _allows(value: IntRange | Categorical, choice: int) -> bool:
    return value.low <= choice <= value.high if isinstance(value, IntRange) else choice in value.choices
