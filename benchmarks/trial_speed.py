"""Wall time of one trial of a 17k-parameter MLP on digits (20 epochs), before and after the speed work (issue 5).

    python benchmarks/trial_speed.py [--repeats 10]

Runs the same candidate (64 → 128 → 64 → 10, Adam, batch 32, 20 epochs, no early stop) as whole
Optuna trials of :class:`TradeoffObjective`, alternating two variants in one process so that both
see the same machine states:

- ``before``: the previous training path, NumPy arrays into ``model.fit`` with
  ``steps_per_execution=32`` (Keras builds a new input pipeline every epoch), and a full garbage
  collection of TensorFlow's ~400k objects in every ``clear_session``;
- ``after``: the current path, a training loop of our own with each epoch one compiled call
  (``model.fit`` spent ~0.8 s per model building its graphs), and long-lived objects frozen out of
  the collector's view.

Prints median trial and training seconds and the validation-accuracy distribution of each, with a
Mann-Whitney U test of the two (the speed work must not change what training learns).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import tempfile
from pathlib import Path

import keras
import numpy as np
import optuna
from scipy.stats import mannwhitneyu

import tradeoff_search.trial._objective as objective_module
from tradeoff_search import StudySpec, TradeoffObjective
from tradeoff_search.data._dataset import Dataset
from tradeoff_search.space._space import Recipe
from tradeoff_search.spec._sections import TrainingSection
from tradeoff_search.trial._training import TrainingResult, make_optimizer, train

REPO = Path(__file__).resolve().parent.parent
PARAMS = {"n_layers": 2, "units_0": 128, "units_1": 64, "activation": "relu", "dropout": 0.1, "batch_norm": False,
          "optimizer": "adam", "learning_rate": 1e-3, "schedule": "constant", "batch_size": 32}  # fmt: skip


def train_before(
    model: keras.Model, recipe: Recipe, data: Dataset, training: TrainingSection, on_epoch_end: None = None
) -> TrainingResult:
    """The training path before the speed work, kept here to measure against."""
    import time

    steps_per_epoch = -(-len(data.y_train) // recipe.batch_size)
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch, training.max_epochs),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=min(32, steps_per_epoch))  # fmt: skip
    start = time.perf_counter()
    fitted = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                       batch_size=recipe.batch_size, validation_batch_size=1024, epochs=training.max_epochs,
                       callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0)  # fmt: skip
    history = {(k if k.startswith("val_") else f"train_{k}"): v for k, v in fitted.history.items()}
    return TrainingResult(history=history, seconds=time.perf_counter() - start)


def use(variant: str) -> None:
    if variant == "before":
        gc.unfreeze()
        objective_module.train = train_before
    else:
        gc.collect()
        gc.freeze()
        objective_module.train = train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    spec = StudySpec.load(REPO / "studies" / "digits.toml")
    spec = dataclasses.replace(spec, training=dataclasses.replace(spec.training, max_epochs=20, patience=20))
    objective = TradeoffObjective(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, list[optuna.trial.FrozenTrial]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as root:
        study = optuna.create_study(directions=objective.directions, storage=f"sqlite:///{root}/optuna.db")
        for repeat in range(args.repeats + 1):  # the first round warms both up and is not counted
            for variant in ("before", "after"):
                use(variant)
                study.enqueue_trial(PARAMS)
                study.optimize(objective, n_trials=1)
                if repeat:
                    results[variant].append(study.trials[-1])
    print(f"17k-parameter MLP on digits, 20 epochs, {args.repeats} trials each, alternated:")
    print(f"{'':8} {'trial s':>8} {'train s':>8} {'val acc median [min, max]':>28}")
    medians = {}
    for variant, trials in results.items():
        seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
        accuracy = [t.values[0] for t in trials]
        train_seconds = statistics.median(t.user_attrs["train_seconds"] for t in trials)
        medians[variant] = statistics.median(seconds)
        print(f"{variant:8} {medians[variant]:>8.2f} {train_seconds:>8.2f}"
              f"   {np.median(accuracy):.3f} [{min(accuracy):.3f}, {max(accuracy):.3f}]")  # fmt: skip
    print(f"trial wall time after / before: {medians['after'] / medians['before']:.2f}")
    before, after = ([t.values[0] for t in results[variant]] for variant in ("before", "after"))
    print(f"validation accuracy, same distribution? Mann-Whitney U p = {mannwhitneyu(before, after).pvalue:.2f}")


if __name__ == "__main__":
    main()
