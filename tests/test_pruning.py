"""Multi-objective early stopping: the rule on plain numbers, then a real pruned trial end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from tradeoff_search import MLflowParetoCallback, StudySpec, TradeoffObjective
from tradeoff_search.trial._pruning import Rival, dominating_rival, is_rung


def test_rungs_double_from_epoch_two() -> None:
    assert [e for e in range(1, 40) if is_rung(e)] == [2, 4, 8, 16, 32]


def test_only_a_no_slower_rival_ahead_by_the_margin_prunes() -> None:
    rival = Rival(number=7, known=(0.002,), best_accuracy=np.maximum.accumulate([0.5, 0.8, 0.7, 0.9]))
    assert rival.accuracy_by(3) == 0.8 and rival.accuracy_by(10) == 0.9  # best so far; kept after it stopped
    assert dominating_rival((0.003,), 0.70, 2, [rival], margin=0.05) is rival
    assert dominating_rival((0.003,), 0.76, 2, [rival], margin=0.05) is None  # within the margin
    assert dominating_rival((0.001,), 0.10, 2, [rival], margin=0.05) is None  # the rival is slower
    assert dominating_rival((0.003, 10.0), 0.1, 2, [Rival(1, (0.002, 20.0), np.array([0.9]))], 0.0) is None


SPEC = """
[study]
name = "prune"
[data]
source = "sklearn:digits"
[latency]
max_seconds = 0.3
[model]
n_layers = [1, 2]
units = [16, 512]
activation = "relu"
dropout = 0.0
[optimizer]
name = ["adam", "sgd"]
learning_rate = [1e-5, 1e-2]
schedule = "constant"
momentum = 0.0
nesterov = false
[training]
batch_size = 64
max_epochs = 6
patience = 6
pruning = true
pruning_margin = 0.05
[tracking]
log_models = "none"
"""


@pytest.mark.e2e
def test_a_dominated_trial_is_pruned_with_its_curve_recorded(write_spec, tmp_path: Path, mlflow_store) -> None:
    objective = TradeoffObjective(StudySpec.load(write_spec(SPEC)))
    uri = mlflow_store()
    study = optuna.create_study(directions=objective.directions, storage=f"sqlite:///{tmp_path}/optuna.db")
    study.set_metric_names(objective.metric_names)
    # A small model that learns fast, then a ~300k-parameter one (surely slower) that barely learns.
    study.enqueue_trial({"n_layers": 1, "units_0": 16, "optimizer": "adam", "learning_rate": 1e-2})
    study.enqueue_trial({"n_layers": 2, "units_0": 512, "units_1": 512, "optimizer": "sgd", "learning_rate": 1e-5})
    callback = MLflowParetoCallback(tracking_uri=uri, experiment="prune")
    study.optimize(objective, n_trials=2, callbacks=[callback])

    fast, slow = study.trials
    assert fast.state == optuna.trial.TrialState.COMPLETE
    assert fast.values[1] < slow.user_attrs["latency"]["normalized_ms"]
    assert slow.state == optuna.trial.TrialState.PRUNED and slow.values is None
    assert slow.user_attrs["epochs"] == 2 < fast.user_attrs["epochs"]  # stopped at the first rung
    assert len(slow.user_attrs["history"]["val_accuracy"]) == 2
    assert "trial 0" in slow.user_attrs["prune_reason"] and "epoch 2" in slow.user_attrs["prune_reason"]
    assert [t.number for t in study.best_trials] == [0]

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("prune").experiment_id], "tags.`optuna.trial` = '1'")
    assert run.info.status == "KILLED" and "trial 0" in run.data.tags["pruned_reason"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [0, 1]
