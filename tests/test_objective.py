"""TradeoffObjective on real tiny Keras models: calibration, companions as objectives, re-timing."""

from __future__ import annotations

import optuna
import pytest

from tradeoff_search import StudySpec, TradeoffObjective
from tradeoff_search._objective import CALIBRATION_ATTR
from tradeoff_search._pareto import RETIMED_ATTR, front_rows, front_trials
from tradeoff_search._retime import retime_front, retimed_front

from .conftest import TINY_SPEC

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def macs_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, TradeoffObjective]:
    path = tmp_path_factory.mktemp("spec") / "macs.toml"
    spec = TINY_SPEC.replace("[latency]\n", "[latency]\nbatch_size = [1, 16]\n")
    path.write_text(spec + '[objectives]\nextra = ["macs"]\n[tracking]\nlog_models = "none"\n')
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
        # The second batch size is timed too, in its own calibrated units: 16 rows cost more than 1.
        assert trial.user_attrs["latency_ms_batch16"] > latency_ms
    assert objective.calibrate(study) == calibration  # stored once, reused
    assert study.user_attrs[f"{CALIBRATION_ATTR}_batch16"]["batch_size"] == 16


def test_front_is_retimed_side_by_side(macs_study) -> None:
    study, objective = macs_study
    front = front_trials(study)
    retimed = retime_front(study, objective)
    if len(front) < 2:
        assert retimed == {}
        return
    assert set(retimed) == {t.number for t in front}
    assert all(v > 0 for v in retimed.values())
    assert study.user_attrs[RETIMED_ATTR] == {str(k): v for k, v in retimed.items()}
    assert retimed_front(study) <= set(retimed)
    assert all(row["latency_retimed_ms"] == retimed[row["trial"]] for row in front_rows(study))
