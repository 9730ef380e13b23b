"""The search space: an Optuna trial → a :class:`Candidate` (plain data, no framework objects)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradeoff_search._spec import Categorical, FloatRange, IntRange, StudySpec

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Candidate:
    """One point of the architecture × optimizer space."""

    units: tuple[int, ...]  # mlp: units per hidden layer
    activation: str
    dropout: float
    batch_norm: bool
    optimizer: str
    learning_rate: float
    schedule: str
    batch_size: int
    weight_decay: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    family: str = "mlp"
    filters: tuple[int, ...] = ()  # cnn1d/cnn2d: filters per convolution block
    kernel_size: int | None = None
    downsample: str | None = None  # after each block: "max" pooling, "stride" 2, or "none"
    residual: bool | None = None
    gru_units: tuple[int, ...] = ()  # gru: units per recurrent layer

    @property
    def n_layers(self) -> int:
        return len(self.units or self.filters or self.gru_units)


def _suggest(trial: optuna.Trial, name: str, value: IntRange | FloatRange | Categorical) -> Any:
    if isinstance(value, Categorical):
        return trial.suggest_categorical(name, list(value.choices))
    if isinstance(value, IntRange):
        return trial.suggest_int(name, value.low, value.high, log=value.log)
    return trial.suggest_float(name, value.low, value.high, log=value.log)


def suggest(trial: optuna.Trial, spec: StudySpec) -> Candidate:
    """Ask ``trial`` for a candidate, define-by-run: a trial suggests only the knobs it uses.

    First the architecture ``family``, then its knobs, with widths per layer (``units_0``,
    ``filters_1``, ``gru_units_0``, …); batch norm for mlp and cnn; ``weight_decay`` only for ``adamw`` (for
    Keras' other optimizers it would turn ``adam`` into a copy of ``adamw``); ``momentum`` for
    ``sgd`` and ``rmsprop``; ``nesterov`` for ``sgd``.
    """
    model, opt = spec.model, spec.optimizer
    family = _suggest(trial, "family", model.families)
    architecture: dict[str, Any] = {"family": family, "units": ()}
    if family == "mlp":
        n_layers = _suggest(trial, "n_layers", model.n_layers)
        architecture["units"] = tuple(_suggest(trial, f"units_{i}", model.units) for i in range(n_layers))
    elif family in ("cnn1d", "cnn2d"):
        blocks = _suggest(trial, "conv_blocks", model.conv_blocks)
        architecture["filters"] = tuple(_suggest(trial, f"filters_{i}", model.filters) for i in range(blocks))
        architecture["kernel_size"] = _suggest(trial, "kernel_size", model.kernel_size)
        architecture["downsample"] = _suggest(trial, "downsample", model.downsample)
        architecture["residual"] = _suggest(trial, "residual", model.residual)
    else:
        layers = _suggest(trial, "gru_layers", model.gru_layers)
        architecture["gru_units"] = tuple(_suggest(trial, f"gru_units_{i}", model.gru_units) for i in range(layers))
    optimizer = _suggest(trial, "optimizer", opt.name)
    return Candidate(
        **architecture,
        activation=_suggest(trial, "activation", model.activation),
        dropout=_suggest(trial, "dropout", model.dropout),
        batch_norm=_suggest(trial, "batch_norm", model.batch_norm) if family != "gru" else False,
        optimizer=optimizer,
        learning_rate=_suggest(trial, "learning_rate", opt.learning_rate),
        schedule=_suggest(trial, "schedule", opt.schedule),
        batch_size=_suggest(trial, "batch_size", spec.training.batch_size),
        weight_decay=_suggest(trial, "weight_decay", opt.weight_decay) if optimizer == "adamw" else None,
        momentum=_suggest(trial, "momentum", opt.momentum) if optimizer in ("sgd", "rmsprop") else None,
        nesterov=_suggest(trial, "nesterov", opt.nesterov) if optimizer == "sgd" else None,
    )
