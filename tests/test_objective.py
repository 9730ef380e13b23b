"""TradeoffObjective on real tiny Keras models: calibration, companions as objectives, re-timing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tradeoff_search import StudySpec, TradeoffObjective
from tradeoff_search.cost._lock import lock_path
from tradeoff_search.front import Front, front_rows
from tradeoff_search.record._keys import CALIBRATION_ATTR, RETIMED_ATTR
from tradeoff_search.study._retime import retime_front

from .conftest import TINY_SPEC

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def macs_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, TradeoffObjective]:
    path = tmp_path_factory.mktemp("spec") / "macs.toml"
    spec = TINY_SPEC.replace("[latency]\n", "[latency]\nbatch_size = [1, 256]\n")
    path.write_text(spec + '[objectives]\nextra = ["macs"]\n[tracking]\nlog_models = "none"\n', encoding="utf-8")
    objective = TradeoffObjective(StudySpec.load(path))
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=3))
    study.set_metric_names(objective.metric_names)
    study.optimize(objective, n_trials=5)
    return study, objective


def test_companion_objective_and_calibration(macs_study) -> None:
    study, objective = macs_study
    assert objective.directions == ["maximize", "minimize", "minimize"]
    assert study.metric_names == ["accuracy", "latency_ms", "macs"]
    calibration = study.user_attrs[CALIBRATION_ATTR]
    for trial in study.trials:
        _, latency_ms, macs = trial.values
        assert macs == trial.user_attrs["macs"] > 0
        stats = trial.user_attrs["latency"]
        assert latency_ms == pytest.approx(stats["p10_ms"] / stats["reference_p10_ms"] * calibration["p10_ms"])
        assert stats["normalized_ms"] == latency_ms
        assert trial.user_attrs["model_bytes"] > 0
        assert stats["batch_size"] == 1
        # The second batch size is timed too, in its own calibrated units: 256 rows cost more than 1
        # (by far: a machine under load must not blur it).
        assert trial.user_attrs["latency_ms_batch256"] > latency_ms
    assert objective.calibrate(study) == calibration  # stored once, reused
    assert study.user_attrs[f"{CALIBRATION_ATTR}_batch256"]["batch_size"] == 256


def test_front_is_retimed_side_by_side(macs_study) -> None:
    study, objective = macs_study
    front = Front.of(study).best_trials
    retimed = retime_front(study, objective)
    if len(front) < 2:
        assert retimed == {}
        return
    assert set(retimed) == {t.number for t in front}
    assert all(v > 0 for v in retimed.values())
    assert study.user_attrs[RETIMED_ATTR] == {str(k): v for k, v in retimed.items()}
    assert Front.of(study).retimed_front <= set(retimed)
    assert all(row["latency_retimed_ms"] == retimed[row["trial"]] for row in front_rows(study))


def test_re_timing_gives_up_on_a_conversion_over_its_time_limit(tmp_path, caplog) -> None:
    """The run's own process re-times the front, with no pool to end it: a conversion that does
    not return within conversion_timeout is left behind, and the front keeps its trials' timings."""
    shutil.copy(Path(__file__).with_name("user_models.py"), tmp_path / "models.py")
    path = tmp_path / "slow.toml"
    path.write_text(TINY_SPEC.replace("[latency]\n", "[latency]\nconversion_timeout = 1\n").replace(
        "[model]\n", '[model]\nbuilder = "models.py:slow_to_convert_when_retimed"\n'), encoding="utf-8")  # fmt: skip
    objective = TradeoffObjective(StudySpec.load(path))
    study = optuna.create_study(directions=objective.directions)
    family = {"family": optuna.distributions.CategoricalDistribution(["slow_to_convert_when_retimed"])}
    for values in [(0.9, 0.002), (0.8, 0.001)]:  # both on the front
        study.add_trial(optuna.trial.create_trial(params={"family": "slow_to_convert_when_retimed"},
                                                  distributions=family, values=values))  # fmt: skip
    started = time.monotonic()
    assert retime_front(study, objective) == {}
    assert time.monotonic() - started < 10 and RETIMED_ATTR not in study.user_attrs
    assert "the front was not re-timed: the conversion to LiteRT of trial 1's model did not finish within 1 s" in (
        caplog.text
    )


def test_a_candidate_containing_an_over_budget_model_is_not_built(tmp_path) -> None:
    path = tmp_path / "budget.toml"
    # 0.1 µs is below LiteRT's per-call floor: every candidate is over the budget.
    path.write_text(TINY_SPEC.replace("[latency]\n", "[latency]\nbudget_ms = 0.0001\n"), encoding="utf-8")
    objective = TradeoffObjective(StudySpec.load(path))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=objective.directions)
    fixed = {"family": "mlp", "n_layers": 1, "activation": "relu", "dropout": 0.0, "batch_norm": False,
             "optimizer": "adam", "learning_rate": 1e-3, "schedule": "constant", "batch_size": 16}  # fmt: skip
    for units, dropout in [(8, 0.0), (12, 0.2), (4, 0.0)]:
        study.enqueue_trial({**fixed, "units_0": units, "dropout": dropout})
    study.optimize(objective, n_trials=3)
    timed, containing, smaller = study.trials

    assert "contains_trial" not in timed.user_attrs and timed.user_attrs["latency"]["normalized_ms"] > 0.0001
    assert containing.user_attrs["contains_trial"] == 0
    assert "latency" not in containing.user_attrs and "n_params" not in containing.user_attrs  # never built
    assert containing.values == timed.values  # its latency is at least the one it contains
    assert containing.constraints == timed.constraints and containing.user_attrs["trained"] is False
    assert "contains_trial" not in smaller.user_attrs and "latency" in smaller.user_attrs
    assert study.best_trials == []


def test_a_candidate_over_the_budget_in_every_mode_is_recorded_in_each_and_its_containers_are_not_built(
    tmp_path,
) -> None:
    path = tmp_path / "modes.toml"
    modes = '[latency]\nbudget_ms = 0.0001\nquantization = ["none", "dynamic"]\n'  # both over: below LiteRT's floor
    path.write_text(TINY_SPEC.replace("[latency]\n", modes), encoding="utf-8")
    objective = TradeoffObjective(StudySpec.load(path))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=objective.directions)
    fixed = {"family": "mlp", "n_layers": 1, "activation": "relu", "dropout": 0.0, "batch_norm": False,
             "optimizer": "adam", "learning_rate": 1e-3, "schedule": "constant", "batch_size": 16}  # fmt: skip
    for units in (8, 12):
        study.enqueue_trial({**fixed, "units_0": units, "quantization": "none"})
    study.optimize(objective, n_trials=2, callbacks=[objective.add_variants])
    _, containing, variant = study.trials  # trial 0 timed in both modes, its dynamic one added after it

    assert (variant.user_attrs["variant_of"], variant.params["quantization"], variant.user_attrs["trained"]) == (
        0, "dynamic", False)  # fmt: skip
    assert variant.values[0] == 0.0 and variant.constraints["latency_ms_over_budget"] > 0
    assert containing.user_attrs["contains_trial"] == 0 and "latency" not in containing.user_attrs  # never built


def test_a_budgeted_study_times_the_narrowest_model_first(tmp_path, mlflow_store) -> None:
    from tradeoff_search import run_study

    path = tmp_path / "narrowest.toml"
    # One operator choice: every candidate of the space contains the narrowest, timed first and
    # over a budget below LiteRT's per-call floor; none of the others is built.
    space = TINY_SPEC.replace("[latency]\n", "[latency]\nbudget_ms = 0.0001\n").replace(
        "[model]\n", '[model]\nactivation = ["relu"]\nbatch_norm = [false]\n'
    )
    path.write_text(space.replace("n_trials = 3", "n_trials = 4"), encoding="utf-8")
    study = run_study(StudySpec.load(path), storage=f"sqlite:///{tmp_path}/optuna.db",
                      tracking_uri=mlflow_store())  # fmt: skip
    first, *others = sorted(study.trials, key=lambda trial: trial.number)
    assert (first.params["n_layers"], first.params["units_0"]) == (1, 4)
    assert first.user_attrs["latency"]["normalized_ms"] > 0.0001
    assert [trial.user_attrs["contains_trial"] for trial in others] == [0, 0, 0]
    assert study.best_trials == []


_TAKE_THE_LOCK = (
    "import fcntl, os, sys\nfcntl.flock(os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT), fcntl.LOCK_EX | fcntl.LOCK_NB)"
)
_TAKEN_WHILE_CONVERTING: list[bool] = []


def converting(trial: optuna.Trial, input_shape: tuple[int, ...], n_classes: int):
    """A builder whose model, as the converter traces it, asks another process to take the
    latency lock exclusively: it can unless this trial holds it (shared or not)."""
    import keras

    def probe(x):
        frame = sys._getframe()
        while frame is not None and not frame.f_code.co_filename.endswith("_convert.py"):
            frame = frame.f_back
        if frame is not None:  # traced for the conversion, not for training
            taken = subprocess.run([sys.executable, "-c", _TAKE_THE_LOCK, str(lock_path())], capture_output=True)
            _TAKEN_WHILE_CONVERTING.append(taken.returncode == 0)
        return x

    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(trial.suggest_int("units", 4, 8), activation="relu")(keras.layers.Lambda(probe)(inputs))
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(hidden))


def test_a_trial_converts_its_model_without_holding_the_latency_lock(tmp_path, monkeypatch) -> None:
    """A slow conversion must not stall the studies that time on this machine: the lock is taken
    after converting, only to time."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # a lock of this test's own, whatever else runs
    path = tmp_path / "converting.toml"
    path.write_text(TINY_SPEC + '[tracking]\nlog_models = "none"\n', encoding="utf-8")
    objective = TradeoffObjective(StudySpec.load(path), build=converting)
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert _TAKEN_WHILE_CONVERTING and all(_TAKEN_WHILE_CONVERTING)
