"""Your own builders: the contract, the spec's targets, the checks before a study, the record."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from tradeoff_search import SpecError, StudySpec, TradeoffObjective, run_study
from tradeoff_search.space._space import narrowest_models
from tradeoff_search.study._open import open_study
from tradeoff_search.trial._screen import ruled_out

from .conftest import litert_outputs

MODELS = Path(__file__).with_name("user_models.py")

# Iris as 4 steps of 1 channel, so that dense, convolutional and separable builders all apply.
SPEC = """
[study]
name = "mine"
n_trials = 3
seed = 3
sampler = "random"

[data]
source = "sklearn:iris"
input_shape = [4, 1]

[latency]
max_seconds = 0.1

[model]
{model}

[training]
batch_size = [16]
max_epochs = 1
"""


@pytest.fixture
def spec_with(tmp_path: Path):
    """A spec of the given [model] lines, with user_models.py copied next to it."""
    shutil.copy(MODELS, tmp_path / "models.py")

    def write(model: str) -> Path:
        path = tmp_path / "spec.toml"
        path.write_text(SPEC.format(model=model), encoding="utf-8")
        return path

    return write


def _nothing_written(folder: Path) -> bool:
    return not (folder / "mlruns").exists() and not list(folder.glob("*.db"))


# ---------------------------------------------------------------------------- spec-level errors
@pytest.mark.parametrize(
    ("model", "key", "says"),
    [
        ('builder = "nowhere.py:build"', "model.builder", "nowhere.py not found"),
        ('builder = "no_such_package.models:build"', "model.builder", "no module no_such_package"),
        ('builder = "models.py"', "model.builder", "module:function or path/to/file.py:function"),
        ('families = ["mlp", "mine"]', "model.families", '"mine" is neither'),
        ('[model.builders]\nmlp = "models.py:two_branch"', "model.builders.mlp", "a name of your own"),
    ],
)
def test_a_missing_builder_is_refused_when_the_spec_loads(spec_with, model, key, says) -> None:
    with pytest.raises(SpecError, match=key) as refused:
        StudySpec.load(spec_with(model))
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_the_cli_refuses_a_missing_builder_in_one_line_with_exit_2(spec_with, tmp_path: Path) -> None:
    path = spec_with('builder = "modles.py:two_branch"')
    done = subprocess.run([sys.executable, "-m", "tradeoff_search", "run", path.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith('error: spec.toml: model.builder = "modles.py:two_branch": expected file.py:function')
    assert len(done.stderr.splitlines()) == 1 and _nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("function", "says"),
    [
        ("no_such_function", "none there; it defines compiled, conditional, "),
        ("raises", "it raised ZeroDivisionError: division by zero at models.py:"),
        ("not_a_model", "a keras.Model from build(trial, input_shape, n_classes) (it returned KerasTensor)"),
        ("wrong_input", "a model taking examples of shape [4, 1], the data's (its input is [28, 28])"),
        ("wrong_width", "a model ending in 3 class probabilities (its output is [10])"),
        ("logits", "class probabilities out: a softmax"),
        ("takes_learning_rate", "parameter names of its own (learning_rate the study suggests itself)"),
        (
            "unsaveable",
            "a model that saves and loads back as .keras, to log and ship it (NotImplementedError: "
            "Object _Scaled was created by passing non-serializable argument values",
        ),
    ],
)
def test_a_builder_breaking_the_contract_is_refused_before_anything_is_written(
    spec_with, in_tmp: Path, function: str, says: str
) -> None:
    spec = StudySpec.load(spec_with(f'builder = "models.py:{function}"'))
    with pytest.raises(SpecError) as refused:
        run_study(spec)
    message = str(refused.value)
    assert message.startswith(f'{spec.path}: model.builder = "models.py:{function}": expected ')
    assert says in message and "\n" not in message
    assert _nothing_written(in_tmp)


def test_a_compiled_model_is_used_with_its_loss_ignored(spec_with, caplog) -> None:
    objective = TradeoffObjective(StudySpec.load(spec_with('builder = "models.py:compiled"')))
    with caplog.at_level(logging.WARNING):
        objective.check_builders()
    (warning,) = [r.getMessage() for r in caplog.records if "compiled" in r.getMessage()]
    assert "builder 'compiled' returns a model compiled with loss 'sparse_categorical_crossentropy': ignored" in warning


# ---------------------------------------------------------------------------- trial-level errors
def test_a_model_that_does_not_convert_fails_its_trial_and_the_study_goes_on(spec_with) -> None:
    builders = 'not_convertible = "models.py:not_convertible"\ntwo_branch = "models.py:two_branch"'
    spec = StudySpec.load(spec_with(f'families = ["not_convertible", "two_branch"]\n[model.builders]\n{builders}'))
    objective = TradeoffObjective(spec)
    study = optuna.create_study(directions=objective.directions)
    for family in spec.model.families.choices:
        study.enqueue_trial({"family": family})
    study.optimize(objective, n_trials=2, catch=(Exception,))
    failed, completed = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL and completed.state == optuna.trial.TrialState.COMPLETE
    reason = failed.user_attrs["fail_reason"]
    assert reason.startswith("BuilderError: builder 'not_convertible': expected a model that converts to LiteRT")
    assert "'tf.PyFunc' op is neither a custom op nor a flex op" in reason
    assert "macs" not in failed.user_attrs and failed.user_attrs["macs_uncounted"][0].endswith(" (_PythonOp)")


def test_with_macs_an_objective_a_layer_it_cannot_count_is_refused(spec_with) -> None:
    path = spec_with('builder = "models.py:not_convertible"')
    path.write_text(path.read_text(encoding="utf-8") + '\n[objectives]\nextra = ["macs"]\n', encoding="utf-8")
    with pytest.raises(SpecError, match=r"expected layers whose multiply-adds are known, as macs is an objective \("):
        TradeoffObjective(StudySpec.load(path)).check_builders()


# ---------------------------------------------------------------------------- Python API
def test_the_objective_takes_a_builder_function(write_spec) -> None:
    from .user_models import conditional

    objective = TradeoffObjective(StudySpec.load(write_spec()), build=conditional, data=_iris_steps())
    assert objective.spec.model.families.choices == ("conditional",)
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        own = {"conv_filters"} if trial.params["block"] == "conv" else {"dense_units", "dense_activation"}
        assert own | {"family", "block", "optimizer", "learning_rate"} <= set(trial.params)
        assert trial.user_attrs["macs"] > 0


def test_workers_cannot_load_a_builder_the_spec_does_not_name(write_spec, in_tmp: Path) -> None:
    from .user_models import two_branch

    with pytest.raises(ValueError, match=r"^build with workers=1: worker processes load the builders"):
        run_study(StudySpec.load(write_spec()), build=two_branch, workers=1)
    with pytest.raises(TypeError, match=r"^build: expected a function"):
        TradeoffObjective(StudySpec.load(write_spec()), build={"mine": 3})
    with pytest.raises(ValueError, match=r"^build: family name 'mlp'"):
        TradeoffObjective(StudySpec.load(write_spec()), build={"mlp": two_branch})
    assert _nothing_written(in_tmp)


def _iris_steps():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32).reshape(-1, 4, 1)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return x[:100], y[:100], x[100:], y[100:]


# ---------------------------------------------------------------------------- budget, record
def test_a_user_builder_is_never_ruled_out_by_containment(spec_with) -> None:
    path = spec_with('families = ["mlp", "mine"]\n[model.builders]\nmine = "models.py:two_branch"')
    spec = StudySpec.load(_with_budget(path))
    study = optuna.create_study(directions=spec.directions)
    latency = {"runtime": "litert", "batch_size": 1, "threads": 1, "normalized_ms": 1.0}
    for params in ({"family": "mine", "wide_units": 4, "deep_units": 4}, {"family": "mlp", "n_layers": 1,
                   "units_0": 16, "activation": "relu", "dropout": 0.0, "batch_norm": False}):  # fmt: skip
        distributions = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, values=[0.0, 1.0],
                                                  user_attrs={"latency": latency}))  # fmt: skip
    assert not ruled_out(study, spec, "mine")  # its narrowest model is unknown: no proof
    assert [m["family"] for m in narrowest_models(spec)] == ["mlp"]


def _with_budget(path: Path) -> Path:
    path.write_text(
        path.read_text(encoding="utf-8").replace("[latency]", "[latency]\nbudget_ms = 0.001"), encoding="utf-8"
    )
    return path


def test_resuming_with_a_changed_builder_source_is_refused_unless_accepted(spec_with, tmp_path: Path, caplog) -> None:
    path = spec_with('builder = "models.py:two_branch"')
    spec = StudySpec.load(path)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    record = {"two_branch": spec.builder_sources["two_branch"].record()}
    open_study(spec, storage, builders=record)
    (tmp_path / "models.py").write_text(MODELS.read_text(encoding="utf-8") + "\n# tuned\n", encoding="utf-8")
    changed = StudySpec.load(path)
    now = {"two_branch": changed.builder_sources["two_branch"].record()}
    with pytest.raises(
        SpecError, match=r'model.builder = "models.py:two_branch": expected the builder source'
    ) as refused:
        open_study(changed, storage, builders=now)
    assert "models.py changed: sha256" in str(refused.value) and "--accept-builder-change" in str(refused.value)
    with caplog.at_level(logging.WARNING):
        study = open_study(changed, storage, builders=now, accept_builder_change=True)
    assert study.user_attrs["builders"] == now and "resumes with builder 'two_branch' changed" in caplog.text


@pytest.mark.e2e
def test_a_builder_file_changed_after_it_was_hashed_is_not_imported(spec_with, tmp_path: Path) -> None:
    """What is imported is what was hashed (and what a study records and checks), never later bytes."""
    spec = StudySpec.load(spec_with('builder = "models.py:two_branch"'))
    marker = tmp_path / "imported"
    with (tmp_path / "models.py").open("a", encoding="utf-8") as models:
        models.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    refused = r"the source hashed when the spec loaded \(\S+/models.py changed since: sha256 \w{12} then, \w{12} now\)$"
    with pytest.raises(SpecError, match=r"model.builder = \"models.py:two_branch\": expected " + refused):
        TradeoffObjective(spec)
    assert not marker.exists()


def test_a_worker_imports_no_builder_source_but_the_one_its_run_hashed(spec_with, tmp_path: Path) -> None:
    """Whoever can write to the storage must not choose the code a worker process imports: the
    study's spec names a builder, and the worker refuses it, before importing it, unless its run
    hashed that very source (here it changed since: another file would be refused alike)."""
    import os

    from tradeoff_search.stores import STORAGE_ENV, TRACKING_ENV
    from tradeoff_search.study._pool import BUILDERS_ENV, worker_environment

    spec = StudySpec.load(spec_with('builder = "models.py:two_branch"'))
    storage, tracking = f"sqlite:///{tmp_path}/optuna.db", f"sqlite:///{tmp_path}/mlflow.db"
    open_study(spec, storage)  # the study holds the spec, as its run left it
    environment = {**os.environ, **worker_environment(storage, tracking, spec)}
    assert set(environment) >= {STORAGE_ENV, TRACKING_ENV, BUILDERS_ENV}
    marker = tmp_path / "imported"
    with (tmp_path / "models.py").open("a", encoding="utf-8") as models:
        models.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "tradeoff_search.study._worker", str(spec.path), "--study=mine", "--n-trials=1",
         "--worker-growth-mb=1024"], env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    then, now = (s.builder_sources["two_branch"].sha256[:12] for s in (spec, StudySpec.load(spec.path)))
    assert done.stderr == (
        f'error: {spec.path}: model.builders.two_branch = "models.py:two_branch": expected the builder source its run '
        f"hashed ({tmp_path}/models.py: sha256 {then} then, {now} now); a worker imports no other\n"
    )
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_cli_study_of_three_user_builders_records_and_exports_them(spec_with, tmp_path: Path, mlflow_store) -> None:
    """Functional with two branches, Sequential with SeparableConv1D, categorical + conditional
    parameters: Optuna's trials and MLflow's child runs one to one, with each builder's own
    parameters; the front's model exported by select as .keras and .tflite that agree."""
    import keras
    from mlflow import MlflowClient

    from tradeoff_search import load_dataset, select_model
    from tradeoff_search.tracking._run_index import TAG_ROLE

    names = ("two_branch", "separable", "conditional")
    builders = "\n".join(f'{name} = "models.py:{name}"' for name in names)
    path = spec_with(f"families = {list(names)}\n[model.builders]\n{builders}".replace("'", '"'))
    path.write_text(
        path.read_text(encoding="utf-8").replace("seed = 3", "seed = 7"), encoding="utf-8"
    )  # a seed drawing each family once
    mlflow_store("mlruns/mlflow.db")  # the MLflow store's tables made: not what this test is about
    done = subprocess.run(
        [sys.executable, "-m", "tradeoff_search", "run", path.name, "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    assert sorted(t.params["family"] for t in study.trials) == sorted(names)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    children = {int(r.data.tags["optuna.trial"]): r for r in runs if r.data.tags[TAG_ROLE] == "trial"}
    (parent,) = [r for r in runs if r.data.tags[TAG_ROLE] == "study"]
    assert sorted(children) == [t.number for t in study.trials]
    for trial in study.trials:
        assert children[trial.number].data.params == {k: str(v) for k, v in trial.params.items()}
        assert children[trial.number].data.metrics["accuracy"] == pytest.approx(trial.values[0])
    by_family = {t.params["family"]: t.params for t in study.trials}
    assert {"wide_units", "deep_units"} <= set(by_family["two_branch"]) and "sep_filters" in by_family["separable"]
    blocks = {"conv": {"conv_filters"}, "dense": {"dense_units", "dense_activation"}}
    block, conditional = by_family["conditional"]["block"], set(by_family["conditional"])
    assert blocks[block] <= conditional and not blocks["dense" if block == "conv" else "conv"] & conditional
    recorded = study.user_attrs["builders"]
    for name in names:
        assert recorded[name]["path"] == str((tmp_path / "models.py").resolve())
        assert parent.data.tags[f"builder.{name}.sha256"] == recorded[name]["sha256"]

    spec = StudySpec.load(path)
    chosen = select_model(spec, study, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    x_test = load_dataset(spec).x_test
    expected = np.asarray(keras.models.load_model(chosen.keras_path)(x_test, training=False))
    np.testing.assert_allclose(litert_outputs(chosen.tflite_path, x_test), expected, atol=1e-5)


def test_a_sequential_without_an_input_is_built_for_the_data(spec_with) -> None:
    import keras

    from tradeoff_search.space._builders import build_checked

    def build(trial, input_shape, n_classes):  # as Keras Tuner examples write it
        return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(n_classes, activation="softmax")])

    spec = StudySpec.load(spec_with('builder = "models.py:two_branch"'))
    again = StudySpec.from_dict(spec.to_dict(), path=spec.path)  # the spec.json of the parent run
    assert again.builder_sources == spec.builder_sources and again.model.families == spec.model.families
    objective = TradeoffObjective(spec)
    model = build_checked("build", build, optuna.create_study().ask(), objective.data)
    assert model.input_shape == (None, 4, 1) and model.output_shape == (None, 3)
