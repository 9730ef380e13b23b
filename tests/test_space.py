from __future__ import annotations

import optuna

from tradeoff_search import StudySpec
from tradeoff_search.space._space import suggest_architecture, suggest_family, suggest_recipe


def test_suggest_is_define_by_run(write_spec) -> None:
    spec = StudySpec.load(write_spec('[data]\nsource = "sklearn:iris"\n[model]\nn_layers = [1, 3]\n'))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen_optimizers = set()
    for _ in range(40):
        trial = study.ask()
        candidate = suggest_architecture(trial, spec.model, suggest_family(trial, spec))
        recipe = suggest_recipe(trial, spec)
        seen_optimizers.add(recipe.optimizer)
        assert len(candidate.units) == trial.params["n_layers"]
        assert {f"units_{i}" for i in range(candidate.n_layers)} <= set(trial.params)
        assert f"units_{candidate.n_layers}" not in trial.params
        assert ("weight_decay" in trial.params) == (recipe.optimizer == "adamw")
        assert ("momentum" in trial.params) == (recipe.optimizer in ("sgd", "rmsprop"))
        assert ("nesterov" in trial.params) == (recipe.optimizer == "sgd")
        assert 1e-4 <= recipe.learning_rate <= 3e-2
        assert recipe.batch_size in (32, 64, 128)
        study.tell(trial, [0.5, 1.0])
    assert seen_optimizers == {"adam", "adamw", "sgd", "rmsprop", "nadam"}


def test_fixed_values_are_respected(write_spec) -> None:
    spec = StudySpec.load(
        write_spec('[data]\nsource = "sklearn:iris"\n[model]\nn_layers = 2\nunits = 8\n[optimizer]\nname = "sgd"\n')
    )
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    candidate, recipe = suggest_architecture(trial, spec.model, "mlp"), suggest_recipe(trial, spec)
    assert candidate.units == (8, 8) and recipe.optimizer == "sgd" and recipe.nesterov in (True, False)
