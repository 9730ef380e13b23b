"""A family the latency budget has ruled out is not proposed again: the proof and the sampler."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

from tradeoff_search import StudySpec, run_study
from tradeoff_search.study._redraw import RedrawingSampler
from tradeoff_search.trial._screen import ruled_out

from .conftest import TINY_SPEC

# Iris as 4 steps of 1 channel: an unrolled GRU takes ~3.3 µs per call here, an MLP of this space
# 0.9-1.1 µs, so a 2 µs budget rules out every GRU and no MLP.
GRU_OR_MLP = (
    TINY_SPEC.replace('source = "sklearn:iris"', 'source = "sklearn:iris"\ninput_shape = [4, 1]')
    .replace("[latency]\n", "[latency]\nbudget_ms = 0.002\n")
    .replace("[model]\n", '[model]\nfamilies = ["mlp", "gru"]\ngru_layers = [1, 1]\ngru_units = [2, 4]\n')
)


def _timed(params: dict, latency_ms: float) -> optuna.trial.FrozenTrial:
    """A finished trial as the objective records a timed candidate (only what the proof reads)."""
    distributions = {name: optuna.distributions.CategoricalDistribution([value]) for name, value in params.items()}
    latency = {"runtime": "litert", "batch_size": 1, "threads": 1, "normalized_ms": latency_ms}
    return optuna.trial.create_trial(params=params, distributions=distributions, values=[0.0, latency_ms],
                                      user_attrs={"latency": latency})  # fmt: skip


TRAINING = {"dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-3, "schedule": "constant", "batch_size": 16}


def test_a_family_is_ruled_out_once_each_of_its_floors_contains_a_model_over_the_budget(write_spec) -> None:
    space = ['families = ["mlp", "cnn1d"]', 'activation = ["relu", "tanh"]', "conv_blocks = [1, 2]", "filters = [4, 8]",
             "kernel_size = [3, 5]", 'downsample = ["stride", "max"]', "residual = [false]"]  # fmt: skip
    text = GRU_OR_MLP.replace('families = ["mlp", "gru"]', "\n".join(space))
    spec = StudySpec.load(write_spec(text))
    study = optuna.create_study(directions=spec.directions)
    floor = {"family": "cnn1d", "conv_blocks": 1, "filters_0": 4, "kernel_size": 3, "downsample": "stride",
             "residual": False, "batch_norm": False, **TRAINING}  # fmt: skip
    study.add_trial(_timed({**floor, "activation": "relu"}, latency_ms=0.005))
    assert not ruled_out(study, spec, "cnn1d")  # tanh CNNs contain no model timed yet
    study.add_trial(_timed({**floor, "activation": "tanh", "kernel_size": 5}, latency_ms=0.005))
    assert not ruled_out(study, spec, "cnn1d")  # a tanh CNN with kernel 3 contains neither
    study.add_trial(_timed({**floor, "activation": "tanh", "downsample": "max"}, latency_ms=0.005))
    assert not ruled_out(study, spec, "cnn1d")  # nor does one that strides
    study.add_trial(_timed({**floor, "activation": "tanh"}, latency_ms=0.001))
    assert not ruled_out(study, spec, "cnn1d")  # under the budget: no proof
    study.add_trial(_timed({**floor, "activation": "tanh"}, latency_ms=0.003))
    assert ruled_out(study, spec, "cnn1d")
    assert not ruled_out(study, spec, "mlp")


@pytest.mark.parametrize(("input_shape", "expected"), [("[4, 1]", True), ("[1, 4]", False)])
def test_no_floor_bounds_residual_cnns_with_blocks_as_wide_as_the_input(write_spec, input_shape, expected) -> None:
    """On 4 channels, a residual block of 4 filters has no shortcut projection, which one of 2 has:
    the narrowest CNN is then no floor, and a model timed over the budget rules nothing out."""
    space = ['families = ["mlp", "cnn1d"]', 'activation = ["relu"]', "conv_blocks = [1, 2]", "filters = [2, 8]",
             "kernel_size = [3]", 'downsample = ["none"]', "residual = [true]"]  # fmt: skip
    text = GRU_OR_MLP.replace('families = ["mlp", "gru"]', "\n".join(space))
    spec = StudySpec.load(write_spec(text.replace("input_shape = [4, 1]", f"input_shape = {input_shape}")))
    study = optuna.create_study(directions=spec.directions)
    narrowest = {"family": "cnn1d", "conv_blocks": 1, "filters_0": 2, "kernel_size": 3, "downsample": "none",
                 "residual": True, "activation": "relu", "batch_norm": False, **TRAINING}  # fmt: skip
    study.add_trial(_timed(narrowest, latency_ms=0.005))
    assert ruled_out(study, spec, "cnn1d") is expected


@pytest.mark.parametrize(
    "sampler",
    [
        optuna.samplers.RandomSampler(seed=0),
        optuna.samplers.TPESampler(seed=0, n_startup_trials=5, multivariate=True),
        optuna.samplers.NSGAIISampler(seed=0, population_size=6),
    ],
)
def test_the_sampler_redraws_a_ruled_out_family_and_learns_from_the_rest(sampler) -> None:
    redrawing = RedrawingSampler(sampler, lambda study, family: family == "gru")
    study = optuna.create_study(sampler=redrawing)

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", ["mlp", "gru", "cnn1d"])
        return trial.suggest_float("x", 0, 1) + (family == "mlp")

    study.optimize(objective, n_trials=30)
    families = [trial.params["family"] for trial in study.trials]
    assert "gru" not in families and {"mlp", "cnn1d"} <= set(families)
    assert str(redrawing) == type(sampler).__name__


def test_without_redraws_a_ruled_out_family_is_replaced_at_once() -> None:
    study = optuna.create_study(
        sampler=RedrawingSampler(optuna.samplers.RandomSampler(seed=0), lambda _, family: family == "gru", attempts=0)
    )
    study.optimize(lambda trial: float(trial.suggest_categorical("family", ["mlp", "gru"]) == "mlp"), n_trials=10)
    assert {trial.params["family"] for trial in study.trials} == {"mlp"}


def test_when_every_family_is_ruled_out_the_draw_is_kept() -> None:
    study = optuna.create_study(sampler=RedrawingSampler(optuna.samplers.RandomSampler(seed=0), lambda *_: True))
    study.optimize(lambda trial: float(trial.suggest_categorical("family", ["mlp", "gru"]) == "mlp"), n_trials=5)
    assert len(study.trials) == 5


@pytest.mark.e2e
def test_a_budgeted_study_stops_proposing_a_family_whose_narrowest_model_is_over(
    write_spec, tmp_path: Path, caplog: pytest.LogCaptureFixture, mlflow_store
) -> None:
    caplog.set_level(logging.INFO, logger="tradeoff_search")
    spec = StudySpec.load(write_spec(GRU_OR_MLP.replace("n_trials = 3", 'n_trials = 8\nsampler = "random"')))
    # finish=False: the front's re-timing and the record's completion are not the sampler's (test_e2e has them)
    study = run_study(spec, storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=mlflow_store(), finish=False)
    trials = sorted(study.trials, key=lambda trial: trial.number)
    assert [trial.params["family"] for trial in trials[:2]] == ["mlp", "gru"]  # the narrowest models first
    assert trials[1].user_attrs["trained"] is False  # the narrowest GRU is over the budget: so is every GRU
    assert [trial.params["family"] for trial in trials[2:]] == ["mlp"] * 6
    assert all(trial.user_attrs["trained"] for trial in trials[2:])
    assert caplog.text.count("no gru can meet the latency budget") == 1
