from __future__ import annotations

import optuna

from tradeoff_search import StudySpec
from tradeoff_search._space import suggest


def test_suggest_is_define_by_run(write_spec) -> None:
    spec = StudySpec.load(write_spec('[data]\nsource = "sklearn:iris"\n[model]\nn_layers = [1, 3]\n'))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen_optimizers = set()
    for _ in range(40):
        trial = study.ask()
        candidate = suggest(trial, spec)
        seen_optimizers.add(candidate.optimizer)
        assert len(candidate.units) == trial.params["n_layers"]
        assert {f"units_{i}" for i in range(candidate.n_layers)} <= set(trial.params)
        assert f"units_{candidate.n_layers}" not in trial.params
        assert ("weight_decay" in trial.params) == (candidate.optimizer == "adamw")
        assert ("momentum" in trial.params) == (candidate.optimizer in ("sgd", "rmsprop"))
        assert ("nesterov" in trial.params) == (candidate.optimizer == "sgd")
        assert 1e-4 <= candidate.learning_rate <= 3e-2
        assert candidate.batch_size in (32, 64, 128)
        study.tell(trial, [0.5, 1.0])
    assert seen_optimizers == {"adam", "adamw", "sgd", "rmsprop", "nadam"}


def test_fixed_values_are_respected(write_spec) -> None:
    spec = StudySpec.load(
        write_spec('[data]\nsource = "sklearn:iris"\n[model]\nn_layers = 2\nunits = 8\n[optimizer]\nname = "sgd"\n')
    )
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    candidate = suggest(trial, spec)
    assert candidate.units == (8, 8) and candidate.optimizer == "sgd" and candidate.nesterov in (True, False)
