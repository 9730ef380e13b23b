"""Building a trial's model: a fresh Keras state, the builder (checked), its recipe and what its
structure tells (parameters, multiply-adds)."""

from __future__ import annotations

import functools
import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradeoff_search.cost._convert import TracedModel
from tradeoff_search.data._dataset import Dataset
from tradeoff_search.record._keys import MACS, MACS_UNCOUNTED, N_PARAMS, PARAMS_METRIC
from tradeoff_search.space._builders import Builder, Family, build_checked
from tradeoff_search.space._families import count_macs, uncounted_layers
from tradeoff_search.space._space import Recipe, suggest_recipe
from tradeoff_search.spec._spec import StudySpec

if TYPE_CHECKING:
    import keras
    import optuna


@dataclass(frozen=True)
class Built:
    """A trial's untrained model and what its build tells.

    Attributes:
        family: the family (builder) name.
        by_user: whether a user builder made it (not a built-in family).
        model: the untrained Keras model.
        recipe: its training recipe.
        companions: the objectives its structure gives (``params``, ``macs``), by metric name.
        shared: the user attributes its variants share (``macs`` or ``macs_uncounted``, ``n_params``).
    """

    family: str
    by_user: bool
    model: keras.Model
    recipe: Recipe
    companions: dict[str, Any]
    shared: dict[str, Any]

    @functools.cached_property
    def traced(self) -> TracedModel:
        """The model traced once, for its conversions before training (to time it) and after (to
        score and ship it)."""
        return TracedModel(self.model)


def build_candidate(trial: optuna.Trial, spec: StudySpec, family: str, builder: Builder, data: Dataset) -> Built:
    """Build ``trial``'s model with ``builder`` in a fresh Keras state seeded by the trial, and
    suggest its recipe; records ``n_params`` and ``macs`` (or ``macs_uncounted``)."""
    import keras

    _freeze_long_lived_objects()
    # A fresh Keras state per trial keeps a long study's memory flat.
    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(spec.study.seed + trial.number)
    model = build_checked(family, builder, trial, data)
    recipe = suggest_recipe(trial, spec)
    n_params = model.count_params()
    counted = _macs(trial, spec, model)
    trial.set_user_attr(N_PARAMS, n_params)
    companions = {PARAMS_METRIC: n_params, MACS: counted.get(MACS)}
    return Built(family, not isinstance(builder, Family), model, recipe, companions, {**counted, N_PARAMS: n_params})


def _macs(trial: optuna.Trial, spec: StudySpec, model: keras.Model) -> dict[str, Any]:
    """The model's multiply-adds, as user attribute ``macs``; unknown, the layers not counted go
    to ``macs_uncounted``, and a study minimizing ``macs`` cannot score the trial."""
    macs = count_macs(model)
    if macs is not None:
        trial.set_user_attr(MACS, macs)
        return {MACS: macs}
    uncounted = uncounted_layers(model)
    trial.set_user_attr(MACS_UNCOUNTED, uncounted)
    if MACS in spec.objectives.extra.choices:
        raise ValueError(f"macs unknown: no multiply-add count for layers {', '.join(uncounted)}; "
                         "drop macs from objectives.extra, or use standard layers")  # fmt: skip
    return {MACS_UNCOUNTED: uncounted}


@functools.cache
def _freeze_long_lived_objects() -> None:
    """Move what is alive before the first trial (TensorFlow, Keras, the data: ~400k objects) out of
    the cyclic garbage collector's view, once per process.

    ``clear_session(free_memory=True)`` runs a full collection every trial; scanning those objects
    made it take ~0.22 s, and ~1 ms after freezing. Objects made later are still collected.
    """
    gc.collect()
    gc.freeze()
