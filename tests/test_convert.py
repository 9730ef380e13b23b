"""Conversion as shipped: quantized tensors really are int8 or float16; a quantized trial is scored
and exported as the LiteRT interpreter runs its .tflite; what the converter cannot do fails a trial."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from ai_edge_litert.interpreter import Interpreter
from mlflow import MlflowClient

from tradeoff_search import StudySpec, TradeoffObjective, load_dataset, run_study, select_model
from tradeoff_search.cost._convert import ConversionError, TracedModel, convert, representative_rows, tflite_outputs
from tradeoff_search.record._keys import FINISHED_ATTR, WORKER_ATTR, WORKER_PROCESS_ATTR
from tradeoff_search.selection._select import verified_model
from tradeoff_search.study._tickets import Tickets, finished_count
from tradeoff_search.trial import describe_modes
from tradeoff_search.trial._staging import provisional_dir
from tradeoff_search.trial._variants import Variant, add_variants

from .conftest import TINY_SPEC


def _mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,))  # dynamic-range quantizes weights of 1024 elements and more only
    hidden = keras.layers.Dense(64, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


def _types(flatbuffer: bytes) -> tuple[str, str, set[str]]:
    """Input type, output type and the types of the tensors of the first Dense kernel's shape."""
    interpreter = Interpreter(model_content=flatbuffer)
    kernels = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details() if tuple(t["shape"]) == (64, 32)}
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    return np.dtype(source["dtype"]).name, np.dtype(target["dtype"]).name, kernels


def test_each_mode_has_the_tensor_types_it_promises() -> None:
    model, rows = _mlp(), np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32)
    assert _types(convert(model, "none", signature=False).flatbuffer) == ("float32", "float32", {"float32"})
    # float16 weights, dequantized to float32 for the CPU's kernels at load time
    assert _types(convert(model, "float16", signature=False).flatbuffer) == (
        "float32",
        "float32",
        {"float16", "float32"},
    )
    assert _types(convert(model, "dynamic", signature=False).flatbuffer) == ("float32", "float32", {"int8"})
    assert _types(convert(model, "int8", representative=rows).flatbuffer) == ("float32", "float32", {"int8"})
    shipped = convert(model, "int8", representative=rows, io="int8")
    assert _types(shipped.flatbuffer) == ("int8", "int8", {"int8"})
    assert "trackable_obj" not in " ".join(convert(model, "dynamic", signature=False).warnings)


def test_a_file_to_deploy_has_the_signature_the_keras_converter_writes() -> None:
    """With its signature, a model is converted from its traced function and the signature added to
    the file: the same signature, operators and outputs as ``from_keras_model``'s (its slow path)."""
    import tensorflow as tf

    x = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    functional = _mlp()
    sequential = keras.Sequential([keras.Input((32,)), keras.layers.Dense(3, activation="softmax")])
    for model in (functional, sequential):
        ours, theirs = convert(model).flatbuffer, tf.lite.TFLiteConverter.from_keras_model(model).convert()
        interpreters = [Interpreter(model_content=flatbuffer) for flatbuffer in (ours, theirs)]
        (signature, *_), (expected, *_) = [i.get_signature_list().items() for i in interpreters]
        assert signature == expected and expected[0] == "serving_default"
        ops = [[op["op_name"] for op in i._get_ops_details()] for i in interpreters]
        assert ops[0] == ops[1]
        (name,) = expected[1]["inputs"]
        outputs = [i.get_signature_runner()(**{name: x})["output_0"] for i in interpreters]
        np.testing.assert_array_equal(outputs[0], outputs[1])


def test_one_trace_converts_the_model_before_and_after_training() -> None:
    """A training traces its model once: converted after training, the trace made before it gives
    the trained model, byte for byte what a fresh conversion of it gives, in every mode."""
    x = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    y = np.arange(64) % 3
    model = _mlp()
    traced = TracedModel(model)
    rows = representative_rows(x, 16)
    before = {mode: traced.convert(mode, representative=rows if mode == "int8" else None).flatbuffer
              for mode in ("none", "dynamic", "int8")}  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    for mode, untrained in before.items():
        representative = rows if mode == "int8" else None
        after = traced.convert(mode, representative=representative).flatbuffer
        assert after == convert(model, mode, representative=representative).flatbuffer
        assert after != untrained
    np.testing.assert_allclose(tflite_outputs(traced.convert().flatbuffer, x), model.predict(x, verbose=0), atol=1e-5)


def test_an_op_without_an_int8_kernel_is_refused() -> None:
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Lambda(keras.ops.sin)(inputs)))
    rows = np.zeros((4, 8), np.float32)
    # The converter keeps SIN in float32 between DEQUANTIZE and QUANTIZE: not full-integer.
    with pytest.raises(ConversionError, match=r"^int8: no int8 kernel for SIN"):
        convert(model, "int8", representative=rows, signature=False)
    assert convert(model, "dynamic", signature=False).flatbuffer  # float kernels are fine there
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Lambda(keras.ops.erf)(inputs))  # no LiteRT kernel at all
    with pytest.raises(ConversionError, match=r"^float16: .*'tf.Erf' op is neither a custom op nor a flex op"):
        convert(model, "float16", signature=False)


def _independent_accuracy(tflite_path: str, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a .tflite file by the LiteRT interpreter, one row per call, int8 I/O by hand."""
    interpreter = Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    (in_scale, in_zero), (out_scale, out_zero) = source["quantization"], target["quantization"]
    integer = source["dtype"] == np.int8
    correct = 0
    for row, label in zip(x, y, strict=True):
        quantized = np.clip(np.round(row / in_scale + in_zero), -128, 127).astype(np.int8) if integer else row
        interpreter.set_tensor(source["index"], np.asarray(quantized[None], source["dtype"]))
        interpreter.invoke()
        scores = interpreter.get_tensor(target["index"])[0].astype(np.float32)
        scores = (scores - out_zero) * out_scale if integer else scores
        correct += int(np.argmax(scores) == label)
    return correct / len(y)


@pytest.mark.e2e
def test_an_int8_trial_is_scored_and_exported_as_shipped(write_spec, tmp_path: Path, mlflow_store) -> None:
    text = TINY_SPEC.replace("max_seconds = 0.2", 'max_seconds = 0.2\nquantization = "int8"\nio = "int8"')
    text = text.replace("units = [4, 16]", 'units = [4, 16]\nactivation = ["relu", "elu"]')  # ELU: no int8 kernel
    spec = StudySpec.load(write_spec(text + "[tracking]\nlog_models = 'all'\n"))
    storage, uri = f"sqlite:///{tmp_path}/optuna.db", mlflow_store()
    queued = optuna.create_study(study_name="tiny", storage=storage, directions=spec.directions)
    for activation in ("elu", "relu", "relu"):
        queued.enqueue_trial({"activation": activation})
    study = run_study(spec, storage=storage, tracking_uri=uri)
    failed, *completed = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "no int8 kernel for ELU" in failed.user_attrs["fail_reason"]
    assert [t.state for t in completed] == [optuna.trial.TrialState.COMPLETE] * 2

    chosen = select_model(spec, study, tmp_path / "out", rule="knee", tracking_uri=uri)
    trial = study.trials[chosen.trial]
    assert trial.params["quantization"] == "int8" and "accuracy_float" in trial.user_attrs
    assert (chosen.quantization, chosen.input_type, chosen.output_type) == ("int8", "int8", "int8")
    data = load_dataset(spec)
    assert trial.values[0] == _independent_accuracy(chosen.tflite_path, data.x_val, data.y_val)
    assert chosen.test_accuracy == _independent_accuracy(chosen.tflite_path, data.x_test, data.y_test)
    assert Path(chosen.keras_path).is_file()
    client = MlflowClient(uri)
    (run,) = client.search_runs(client.get_experiment_by_name("tiny").experiment_id,
                                f"tags.`optuna.trial` = '{chosen.trial}'")  # fmt: skip
    assert run.data.params["quantization"] == "int8" and "accuracy_float" in run.data.metrics
    logged = Path(client.download_artifacts(run.info.run_id, "tflite/model.tflite", str(tmp_path)))
    assert logged.read_bytes() == Path(chosen.tflite_path).read_bytes()  # what the trial logged is what select ships


@pytest.mark.e2e
def test_one_training_is_recorded_in_every_mode(write_spec, tmp_path: Path, mlflow_store) -> None:
    """A training adds its model in the other modes searched as trials of their own, each with
    its MLflow run and files, tagged with the training they share."""
    text = TINY_SPEC.replace("n_trials = 3", "n_trials = 1").replace("units = [4, 16]", "units = [384, 512]")
    text = text.replace("max_seconds = 0.2", 'max_seconds = 0.2\nquantization = ["none", "int8"]')
    spec = StudySpec.load(write_spec(text + "[tracking]\nlog_models = 'all'\n"))  # int8 pays on 512x512 layers
    storage, uri = f"sqlite:///{tmp_path}/optuna.db", mlflow_store()
    queued = optuna.create_study(study_name="tiny", storage=storage, directions=spec.directions)
    queued.enqueue_trial({"quantization": "none", "n_layers": 2, "units_0": 512, "units_1": 512})
    study = run_study(spec, storage=storage, tracking_uri=uri)
    trained, variant = study.trials  # n_trials = 1 training
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert (variant.user_attrs["variant_of"], variant.params) == (0, {**trained.params, "quantization": "int8"})
    for key in (WORKER_ATTR, WORKER_PROCESS_ATTR):  # who writes its run
        assert variant.system_attrs[key] == trained.system_attrs[key]
    assert variant.system_attrs[FINISHED_ATTR] >= trained.system_attrs[FINISHED_ATTR]  # ISO 8601, UTC

    client = MlflowClient(uri)
    runs = client.search_runs(client.get_experiment_by_name("tiny").experiment_id, "tags.`optuna.role` = 'trial'")
    by_number = {int(run.data.tags["optuna.trial"]): run.data for run in runs}
    assert len(runs) == len(by_number) == 2 and set(by_number) == {0, 1}  # one run per trial
    for trial in study.trials:
        logged = by_number[trial.number]
        assert logged.params["quantization"] == trial.params["quantization"]
        assert (logged.metrics["accuracy"], logged.tags["training"]) == (trial.values[0], "0")
    assert "variant_of" not in by_number[0].tags and by_number[1].tags["variant_of"] == "0"
    _, files = verified_model(client, spec, study, variant.number, tmp_path / "variant")  # as select checks it
    data = load_dataset(spec)
    assert variant.values[0] == _independent_accuracy(str(files["model.tflite"]), data.x_val, data.y_val)


def test_a_mode_not_worth_converting_after_training_is_a_pruned_variant_saying_why(tmp_path: Path) -> None:
    """After training, a model is converted only in the modes timed below 0.9x the float32 model's
    latency before it; dynamic-range quantization of a model without a weight of 1024 elements is
    the float32 model, neither timed nor converted. Both are PRUNED variants, with the reason."""
    path = tmp_path / "modes.toml"
    path.write_text(
        TINY_SPEC.replace("max_seconds = 0.2", 'max_seconds = 0.2\nquantization = ["none", "dynamic", "int8"]'),
        encoding="utf-8",
    )
    objective = TradeoffObjective(StudySpec.load(path))
    assert "n_trials = 3 counts trainings" in str(describe_modes(objective.spec))  # as run says first
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=objective.directions)
    study.enqueue_trial({"quantization": "none", "n_layers": 1, "units_0": 8})
    study.optimize(objective, n_trials=1, callbacks=[objective.add_variants])
    trained, *variants = study.trials
    by_mode = {variant.params["quantization"]: variant for variant in variants}
    assert sorted(by_mode) == ["dynamic", "int8"] and trained.state == optuna.trial.TrialState.COMPLETE

    dynamic, int8 = by_mode["dynamic"], by_mode["int8"]
    assert dynamic.state == optuna.trial.TrialState.PRUNED and "latency" not in dynamic.user_attrs
    assert "dynamic quantizes none of its weights" in dynamic.user_attrs["prune_reason"]
    ratio = int8.user_attrs["latency"]["normalized_ms"] / trained.user_attrs["latency"]["normalized_ms"]
    if ratio >= 0.9:  # as at LiteRT's per-call floor, usually: no int8 file converted, nor scored
        assert int8.state == optuna.trial.TrialState.PRUNED and int8.values is None
        assert f"{ratio:.2f}x the float32 model's latency" in int8.user_attrs["prune_reason"]
    else:
        assert int8.state == optuna.trial.TrialState.COMPLETE and "accuracy_float" in int8.user_attrs
    assert all(v.user_attrs["variant_of"] == 0 and v.user_attrs["trained"] for v in variants)


def test_a_mode_the_front_dominates_at_the_float_models_accuracy_is_not_converted(tmp_path: Path) -> None:
    """A mode faster than the float32 model is still not converted after training when, at the
    float32 model's accuracy and its own latency, the study's front already dominates it."""
    path = tmp_path / "modes.toml"
    text = TINY_SPEC.replace("units = [4, 16]", "units = [384, 512]")
    path.write_text(text.replace("max_seconds = 0.2", 'max_seconds = 0.2\nquantization = ["none", "int8"]'))
    objective = TradeoffObjective(StudySpec.load(path))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", directions=objective.directions)
    study.add_trial(optuna.trial.create_trial(values=[1.0, 1e-6]))  # perfect, and faster than any model
    study.enqueue_trial({"quantization": "none", "n_layers": 2, "units_0": 512, "units_1": 512})
    study.optimize(objective, n_trials=1, callbacks=[objective.add_variants])
    _, trained, int8 = study.trials
    assert int8.state == optuna.trial.TrialState.PRUNED and int8.user_attrs["variant_of"] == trained.number
    ratio = int8.user_attrs["latency"]["normalized_ms"] / trained.user_attrs["latency"]["normalized_ms"]
    expected = "the study's front dominates it" if ratio < 0.9 else "the float32 model's latency"
    assert expected in int8.user_attrs["prune_reason"]


def test_variants_are_added_once_and_only_for_a_completed_training(tmp_path: Path) -> None:
    """A retried callback adds no duplicate; a training that failed leaves no variant (nor files);
    n_trials counts trainings, not their variants."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    modes = optuna.distributions.CategoricalDistribution(["none", "int8"])
    for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL):
        trial = study.ask({"quantization": modes})
        staged = provisional_dir(tmp_path / "staging", trial.number, "int8")
        staged.mkdir(parents=True)
        variants = [Variant("int8" if trial.params["quantization"] == "none" else "none", (0.5, 0.001), {}, {}, staged)]
        frozen = study.tell(trial, [0.6, 0.002] if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        for _ in range(2):  # the second call finds the variant in place
            add_variants(study, frozen, variants)
        assert not staged.exists()
    added = [t for t in study.trials if "variant_of" in t.user_attrs]
    assert [(t.user_attrs["variant_of"], t.values) for t in added] == [(0, [0.5, 0.001])]
    assert (tmp_path / "staging" / f"trial-{added[0].number:04d}").is_dir()  # its files, under its number
    assert finished_count(study) == 1 and Tickets(study, 2, storage).left == 1  # one training done, one to go
