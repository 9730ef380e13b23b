"""RAM as the micro runtime allocates it: real Keras models, converted as trials convert them, measured
by the real helper process; the value checked against the runtime itself in fresh processes; a
study's budgets on latency, RAM and flash, from its trials' records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest

from tradeoff_search import StudySpec, TradeoffObjective
from tradeoff_search.cost._convert import convert
from tradeoff_search.cost._memory import REFUSED_RAM_BYTES, NotDeployable, RamMeasurement, _meter, measure_ram
from tradeoff_search.rules import SpecError

from .conftest import TINY_SPEC

pytest.importorskip("tflite_micro", reason="the micro runtime has wheels for x86-64 Linux only")

import keras


def mlp(inputs: int, *widths: int, activation: str = "relu") -> keras.Model:
    layers = [keras.layers.Dense(width, activation=activation) for width in widths]
    return keras.Sequential([keras.Input((inputs,)), *layers, keras.layers.Dense(10, activation="softmax")])


def cnn1d() -> keras.Model:
    """Two conv blocks on 64 steps × 3 channels: activations, not weights, dominate its arena."""
    conv = [keras.layers.Conv1D(16, 3, padding="same", activation="relu") for _ in range(2)]
    head = [keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(10, activation="softmax")]
    return keras.Sequential([keras.Input((64, 3)), conv[0], keras.layers.MaxPooling1D(), conv[1], *head])


def tflite(model: keras.Model, quantization: str = "none") -> bytes:
    """Converted as a trial converts what it times (signature-less; int8 with integer input and output)."""
    rows = np.random.default_rng(0).normal(size=(32, *model.input_shape[1:])).astype(np.float32)
    int8 = quantization == "int8"
    representative = rows if int8 or quantization == "dynamic" else None
    return convert(model, quantization, representative=representative, io="int8" if int8 else "float",
                   signature=False).flatbuffer  # fmt: skip


def ram(flatbuffer: bytes) -> RamMeasurement:
    measured = measure_ram(flatbuffer)
    assert isinstance(measured, RamMeasurement), measured
    assert measured.flash_bytes == len(flatbuffer)
    return measured


def test_ram_grows_with_width_and_with_the_largest_activation() -> None:
    widths = [ram(tflite(mlp(16, width, width // 2))).arena_bytes for width in (32, 128, 512)]
    assert widths[0] < widths[1] < widths[2], widths
    # The same layers after a wider input: the largest activation (the input) grows by 3,072
    # bytes, and so does the arena, within what the planner overlaps.
    narrow, wide = (ram(tflite(mlp(inputs, 64))).arena_bytes for inputs in (16, 784))
    assert 0.9 < (wide - narrow) / (4 * (784 - 16)) < 1.1, (narrow, wide)


def test_int8_needs_less_ram_than_float32_where_activations_dominate() -> None:
    model = cnn1d()
    float32, int8 = ram(tflite(model)), ram(tflite(model, "int8"))
    assert int8.arena_bytes < float32.arena_bytes, (int8, float32)
    assert int8.flash_bytes < float32.flash_bytes


_RUN_AT = textwrap.dedent("""
    import sys
    import numpy as np
    from tflite_micro import runtime
    interpreter = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[2]))
    details = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
    interpreter.invoke()
    print("invoked")
""")


def runs_at(path: str, arena: int) -> bool:
    """Whether the runtime's public API allocates and invokes the model at ``arena`` bytes, in a
    fresh process (a too-small arena may crash it)."""
    done = subprocess.run([sys.executable, "-c", _RUN_AT, path, str(arena)], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and "invoked" in done.stdout


def test_the_minimum_is_what_the_runtime_itself_allocates_and_invokes_with(tmp_path) -> None:
    for name, flatbuffer in {"mlp": tflite(mlp(16, 128, 64), "int8"), "cnn": tflite(cnn1d())}.items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(flatbuffer)
        arena = ram(flatbuffer).arena_bytes
        assert runs_at(str(path), arena), f"{name}: does not run at its measured {arena} bytes"
        assert not runs_at(str(path), arena - 1), f"{name}: runs at {arena - 1} bytes, below its measured minimum"


def test_a_model_the_micro_runtime_cannot_run_is_named_not_a_crash() -> None:
    refused = measure_ram(tflite(mlp(16, 64, activation="gelu")))
    assert isinstance(refused, NotDeployable)
    assert (refused.op, refused.stage) == ("GELU", "load")
    assert str(refused).startswith("not deployable on the micro runtime: op GELU (")
    # Dynamic range: int8 weights with float activations, which no micro kernel takes.
    hybrid = measure_ram(tflite(mlp(16, 128, 64), "dynamic"))
    assert isinstance(hybrid, NotDeployable) and hybrid.op == "FULLY_CONNECTED", hybrid


def test_the_helper_process_is_started_again_when_it_died() -> None:
    flatbuffer = tflite(mlp(16, 32))
    first = ram(flatbuffer)
    process = _meter._process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    again = ram(flatbuffer)
    assert again.arena_bytes == first.arena_bytes
    assert _meter._process is not None and _meter._process.pid != process.pid


def test_ram_budgets_and_objectives_need_the_micro_runtime(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # as where it is not installed
    base = {"study": {"name": "micro"}, "data": {"source": "sklearn:iris"}}
    for key, section in (("budget.ram_kb", {"budget": {"ram_kb": 16}}),
                         ("objectives.extra", {"objectives": {"extra": ["ram_bytes"]}})):  # fmt: skip
        with pytest.raises(SpecError) as refused:
            StudySpec.from_dict(base | section, path="micro.toml")
        assert str(refused.value).startswith(f"micro.toml: {key} = ")
        assert "pip install 'tradeoff_search[micro]'" in str(refused.value)
        assert "\n" not in str(refused.value)
    StudySpec.from_dict(base | {"budget": {"flash_kb": 64, "latency_ms": 1}}, path="micro.toml")  # no RAM: fine


def test_a_study_with_all_three_budgets_never_trains_a_candidate_over_one(tmp_path) -> None:
    space = "n_layers = [1, 3]\nunits = [4, 1024]\nactivation = ['relu', 'gelu']"
    budgets = '[budget]\nlatency_ms = 1000\nram_kb = 3\nflash_kb = 64\n[objectives]\nextra = ["ram_bytes"]\n'
    path = tmp_path / "budgets.toml"
    spec = TINY_SPEC.replace("n_layers = [1, 2]\nunits = [4, 16]", space).replace("max_epochs = 2", "max_epochs = 1")
    path.write_text(spec + budgets, encoding="utf-8")
    objective = TradeoffObjective(StudySpec.load(path))
    study = optuna.create_study(directions=objective.directions)
    fixed = {"family": "mlp", "dropout": 0.0, "batch_norm": False, "optimizer": "adam", "learning_rate": 1e-3,
             "schedule": "constant", "batch_size": 16, "activation": "relu"}  # fmt: skip
    small = {"n_layers": 1, "units_0": 8}  # fits: 1.7 KB of arena, 1.5 KB of flash
    wide = {"n_layers": 1, "units_0": 1024}  # a 4 KB activation: 5.3 KB of arena, over the RAM budget
    deep = {"n_layers": 3, "units_0": 128, "units_1": 128, "units_2": 128}  # 2.7 KB of arena, 133 KB of flash
    gelu = {"n_layers": 1, "units_0": 8, "activation": "gelu"}  # no micro kernel
    for params in (small, wide, deep, gelu):
        study.enqueue_trial({**fixed, **params})
    study.optimize(objective, n_trials=4)

    for trial in study.trials:  # from the records alone: trained exactly when within every budget
        assert set(trial.constraints) == {"latency_ms_over_budget", "ram_kb_over_budget", "flash_kb_over_budget"}
        within = all(excess <= 0 for excess in trial.constraints.values())
        assert trial.user_attrs["trained"] is within and ("epochs" in trial.user_attrs) is within, trial.number
    fits, over_ram, over_flash, refused = study.trials
    assert fits.values[2] == fits.user_attrs["ram_bytes"] < 3 * 1024 and fits.values[0] > 0
    assert over_ram.user_attrs["ram_bytes"] > 4 * 1024 and over_ram.constraints["ram_kb_over_budget"] > 0
    assert over_ram.constraints["flash_kb_over_budget"] <= 0 and over_ram.values[0] == 0
    assert over_flash.user_attrs["model_bytes"] > 64 * 1024 and over_flash.constraints["ram_kb_over_budget"] <= 0
    assert over_flash.constraints["flash_kb_over_budget"] == over_flash.user_attrs["model_bytes"] / 1024 - 64
    assert "ram_bytes" not in refused.user_attrs and refused.values[2] == REFUSED_RAM_BYTES
    assert refused.user_attrs["ram_refusal"].startswith("not deployable on the micro runtime: op GELU (")
    assert [t.number for t in study.best_trials] == [0]


def test_a_study_of_four_objectives_has_its_front_record_and_select_by_budget(
    write_spec, tmp_path, mlflow_store, capsys
) -> None:
    from mlflow import MlflowClient

    from tradeoff_search import run_study
    from tradeoff_search.cli._cli import main
    from tradeoff_search.front import Front

    text = TINY_SPEC.replace("n_trials = 3", "n_trials = 5").replace("units = [4, 16]", "units = [4, 256]")
    text += '[objectives]\nextra = ["ram_bytes", "model_bytes"]\n[budget]\nram_kb = 8\nflash_kb = 256\n'
    path = write_spec(text)
    storage, uri = f"sqlite:///{tmp_path}/optuna.db", mlflow_store()
    study = run_study(StudySpec.load(path), storage=storage, tracking_uri=uri)
    assert study.metric_names == ["accuracy", "latency_ms", "ram_bytes", "model_bytes"]
    front = Front.of(study).best_trials
    assert front and all(t.values[2:] == [t.user_attrs["ram_bytes"], t.user_attrs["model_bytes"]] for t in front)

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("optuna.role") == "study")
    assert parent.data.metrics["hypervolume"] > 0  # from accuracy 0, 100 ms, 8 KB and 256 KB
    children = {r.info.run_name: r for r in runs if r is not parent}
    for trial in study.trials:  # RAM a metric (REFUSED_RAM_BYTES where it cannot run), and why a tag
        run = children[f"trial-{trial.number:04d}"]
        assert run.data.metrics["ram_bytes"] == trial.user_attrs.get("ram_bytes", REFUSED_RAM_BYTES)
        assert run.data.tags.get("ram_refusal") == trial.user_attrs.get("ram_refusal")
        assert run.data.tags["pareto"] == str(trial in front).lower()

    capsys.readouterr()
    assert main(["pareto", str(path), "--storage", storage]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")).split()
    assert header[:2] == ["trial", "accuracy"] and {"ram_bytes", "model_bytes"} <= set(header), header

    # The front's median RAM as the budget: the most accurate front model within it and the flash budget.
    rams = sorted(t.user_attrs["ram_bytes"] for t in front)
    ram_kb, flash_kb = rams[len(rams) // 2] / 1024, 256.0
    within = [t for t in front if t.values[2] <= ram_kb * 1024 and t.values[3] <= flash_kb * 1024]
    expected = max(within, key=lambda t: (t.values[0], -t.values[1]))
    select = ["select", str(path), "--storage", storage, "--tracking-uri", uri, "--out", str(tmp_path / "out")]
    assert main([*select, "--max-ram-kb", str(ram_kb), "--max-flash-kb", str(flash_kb)]) == 0
    printed = capsys.readouterr().out
    assert f"trial {expected.number} by budget: " in printed
    # Measured before training, the arena is the trained and exported file's (its biases kept: see _timing).
    assert f" KB, RAM {expected.values[2] / 1024:.2f} KB on the micro runtime\n" in printed

    assert main([*select, "--max-ram-kb", "0.01"]) == 2  # no arena is 10 bytes
    error = capsys.readouterr().err
    assert error.startswith("error: --max-ram-kb: max_ram_kb = 0.01: expected a budget some front model meets "
                            "(no model of the front within 0.01 KB RAM; closest: trial ")  # fmt: skip
    assert error.count("\n") == 1
    with pytest.raises(SystemExit) as usage:
        main([*select, "--max-ram-kb", "8", "--min-accuracy", "0.5"])
    assert usage.value.code == 2
    assert "argument --min-accuracy: not allowed with --max-ram-kb" in capsys.readouterr().err


def test_ram_and_flash_budgets_no_candidate_meets_exit_1_naming_the_closest(
    tmp_path, mlflow_store, monkeypatch, capsys
) -> None:
    from tradeoff_search.cli._cli import main

    spec = '[study]\nn_trials = 2\n[data]\nsource = "sklearn:iris"\n[budget]\nram_kb = 0.5\nflash_kb = 64\n'
    spec += '[model]\nn_layers = [1, 1]\nunits = [8, 16]\nactivation = "relu"\n[tracking]\nlog_models = "none"\n'
    (tmp_path / "tight.toml").write_text(spec, encoding="utf-8")
    mlflow_store("mlruns/mlflow.db")  # its tables made: not what this test is about
    monkeypatch.chdir(tmp_path)
    assert main(["run", "tight.toml", "--no-progress", "--in-process"]) == 1
    printed = capsys.readouterr()
    assert "(2 complete (2 over a budget), 0 failed trials)" in printed.out
    error = printed.err.strip().splitlines()[-1]
    assert error.startswith("error: tight.toml: [budget] ram_kb = 0.5, flash_kb = 64: none of the 2 candidates met "
                            "them all; the closest, trial "), error  # fmt: skip
    assert ", is over by ram_kb_over_budget +" in error and error.endswith(". Raise a budget or search smaller models.")
