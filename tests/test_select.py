"""From a front to one model: the rules, then export, re-timing and registry on a real tiny study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from tradeoff_search import SpecError, StudySpec, load_dataset, run_study, select_model
from tradeoff_search.cli import main
from tradeoff_search.record._keys import RETIMED_ATTR
from tradeoff_search.selection._budgets import NoneFits, Point, binding_words, pick_within
from tradeoff_search.selection._select import front_points, pick
from tradeoff_search.study._open import open_study
from tradeoff_search.trial._staging import file_digest

from .conftest import TINY_SPEC, FinishedStudy, litert_outputs, table_frame

FRONT = [(0, 0.50, 0.001), (1, 0.80, 0.002), (2, 0.90, 0.004), (3, 0.92, 0.100)]


def test_rules_pick_from_a_front() -> None:
    assert pick(FRONT, "max_latency", max_latency_ms=0.005) == 2
    assert pick(FRONT, "min_accuracy", min_accuracy=0.85) == 2
    assert pick(FRONT, "knee") == 2  # farthest above the chord: the last cheap accuracy gain
    assert pick(FRONT, "mnas", mnas_weight=-0.07, target_ms=0.004) == 2
    assert pick(FRONT, "mnas", mnas_weight=-1.0, target_ms=0.004) == 0  # latency weighs heavily
    with pytest.raises(ValueError, match=r"within 0\.0001 ms"):
        pick(FRONT, "max_latency", max_latency_ms=0.0001)
    with pytest.raises(ValueError, match=r"accuracy 0\.99"):
        pick(FRONT, "min_accuracy", min_accuracy=0.99)


GELU = "not deployable on the micro runtime: op GELU (Didn't find op for builtin opcode 'GELU')"
# trial, accuracy, latency_ms, ram_bytes, flash_bytes (, why no RAM)
COSTS = [Point(0, 0.50, 0.001, 2000, 8000), Point(1, 0.80, 0.002, 9000, 20000), Point(2, 0.90, 0.004, 20000, 40000),
         Point(3, 0.95, 0.003, None, 30000, GELU)]  # fmt: skip


def test_budgets_pick_the_most_accurate_within_all_and_say_which_binds() -> None:
    ram = pick_within(COSTS, {"max_ram_kb": 16})  # trial 2 needs 19.5 KB, trial 3 does not run there
    assert (ram.trial, ram.binding, ram.together, ram.next_better) == (1, ("max_ram_kb",), False, 3)
    assert binding_words(ram, COSTS) == f"RAM binds (trial 3, accuracy 0.9500, {GELU})"
    both = pick_within(COSTS, {"max_ram_kb": 16, "max_latency_ms": 0.0035})  # trial 3 is out by RAM alone
    assert (both.trial, both.binding) == (1, ("max_ram_kb",))
    together = pick_within(COSTS, {"max_latency_ms": 0.0025, "max_flash_kb": 25})  # 2 and 3 break both
    assert (together.trial, together.binding, together.together) == (1, ("max_latency_ms", "max_flash_kb"), True)
    assert binding_words(together, COSTS).startswith("latency and flash bind together (trial 3, accuracy 0.9500, ")
    loose = pick_within(COSTS, {"max_latency_ms": 1.0, "max_flash_kb": 100})
    assert (loose.trial, loose.binding) == (3, ())
    with pytest.raises(NoneFits) as none:
        pick_within(COSTS, {"max_ram_kb": 1, "max_flash_kb": 64})
    assert str(none.value) == ("no model of the front within 1 KB RAM, 64 KB flash; closest: trial 0 "
                               "(accuracy 0.5000, RAM 1.953 KB)")  # fmt: skip
    assert none.value.budget == "max_ram_kb"
    assert pick(FRONT, "max_latency", max_latency_ms=0.005) == pick_within([Point(*p) for p in FRONT],
                                                                           {"max_latency_ms": 0.005}).trial  # fmt: skip


def test_choices_are_the_front_after_re_timing() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms"])
    for accuracy, latency_ms in [(0.5, 0.001), (0.9, 0.002), (0.95, 0.003), (0.4, 0.004)]:
        study.tell(study.ask(), [accuracy, latency_ms])
    assert front_points(study) == [(0, 0.5, 0.001), (1, 0.9, 0.002), (2, 0.95, 0.003)]
    # Re-timed side by side, trial 1 is as fast as trial 0 and more accurate: trial 0 is no choice.
    study.set_user_attr(RETIMED_ATTR, {"0": 0.0012, "1": 0.0011, "2": 0.003})
    assert front_points(study) == [(1, 0.9, 0.0011), (2, 0.95, 0.003)]


@pytest.mark.e2e
def test_select_exports_tests_and_registers(write_spec, tmp_path: Path, mlflow_store) -> None:
    # A name with quotes, a backslash and "and": a literal in every MLflow filter (runs, registry).
    name = "o'neil \\ and x"
    # A table with text columns and missing values: select ships the encoding beside the model.
    frame = table_frame(200)
    frame.loc[[4, 8], "plan"] = None
    frame.to_csv(tmp_path / "table.csv", index=False)
    data = 'source = "csv:table.csv"\ntarget = "label"\nmissing = "impute"'
    text = TINY_SPEC.replace("n_trials = 3", "n_trials = 4").replace('"tiny"', '"o\'neil \\\\ and x"')
    text = text.replace('source = "sklearn:iris"', data)
    spec = StudySpec.load(write_spec(text))
    assert spec.study.name == name
    uri = mlflow_store()
    study = run_study(spec, storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=uri)
    parents = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name(name).experiment_id], "tags.`optuna.role` = 'study'"
    )
    assert [p.info.run_name for p in parents] == [name]  # found again by every trial: no orphan
    assert "data_preprocessing" not in study.user_attrs  # each trial binds its own encoding; no run rewrites one
    x_test = load_dataset(spec).x_test
    client = MlflowClient(uri)
    rules = {"knee": {}, "max_latency": {"max_latency_ms": 10.0}, "min_accuracy": {"min_accuracy": 0.01},
             "mnas": {"mnas_weight": -0.07}}  # fmt: skip
    for i, (rule, options) in enumerate(rules.items()):
        chosen = select_model(spec, study, tmp_path / rule, rule=rule, tracking_uri=uri, **options)
        assert chosen.trial in {t.number for t in study.best_trials}
        assert 0 <= chosen.test_accuracy <= 1 and chosen.exported_latency_ms > 0
        keras_out = np.asarray(keras.models.load_model(chosen.keras_path)(x_test, training=False))
        np.testing.assert_allclose(litert_outputs(chosen.tflite_path, x_test), keras_out, atol=1e-5)
        document = json.loads((tmp_path / rule / "preprocessing.json").read_text(encoding="utf-8"))
        assert chosen.preprocessing_path == str(tmp_path / rule / "preprocessing.json")
        assert document == load_dataset(spec).preprocessing  # the encoding the model takes, as its trial recorded
        recorded = study.trials[chosen.trial].user_attrs["model_sha256"]["preprocessing.json"]
        assert recorded == file_digest(tmp_path / rule / "preprocessing.json")
        version = client.get_model_version(chosen.registered_model, chosen.registered_version)
        assert str(version.version) == str(i + 1) and version.tags["rule"] == rule
        assert float(version.tags["test_accuracy"]) == pytest.approx(chosen.test_accuracy)
        assert version.tags["trial"] == str(chosen.trial)
    # A fifth city in the file: data other than the study's, which select neither tests nor ships.
    frame.loc[[5, 9, 13], "city"] = "quito"
    frame.to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(SpecError, match=r"data.source = \"csv:table.csv\": expected the data study .+; restore") as e:
        select_model(spec, study, tmp_path / "changed", tracking_uri=uri)
    assert "\n" not in str(e.value) and not (tmp_path / "changed").exists()
    # Accepted for the study (run --accept-data-change), it is another encoding than its models take.
    open_study(spec, f"sqlite:///{tmp_path}/optuna.db", data=load_dataset(spec), accept_data_change=True)
    with pytest.raises(SpecError, match=r"expected the data trial \d+ was trained on .+; restore it") as e:
        select_model(spec, study, tmp_path / "changed", tracking_uri=uri)
    assert "\n" not in str(e.value) and not (tmp_path / "changed").exists()


@pytest.mark.e2e
def test_select_exports_into_an_empty_folder_or_its_own_only(
    tiny_cli_study: FinishedStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "study"  # a copy: its registry gets versions of its own
    shutil.copytree(tiny_cli_study.folder, folder)
    monkeypatch.chdir(folder)
    (folder / "foreign").mkdir()
    (folder / "foreign" / "notes.txt").write_text("mine\n", encoding="utf-8")
    capfd.readouterr()
    assert main(["select", "spec.toml", "--out", "foreign"]) == 2
    out, err = capfd.readouterr()
    assert err == ('error: --out: out = "foreign": expected an empty folder or one select wrote (it holds notes.txt, '
                   "which select did not write)\n") and out == ""  # fmt: skip
    assert [p.name for p in (folder / "foreign").iterdir()] == ["notes.txt"]
    assert not (folder / "mlruns" / "selected").exists()

    assert main(["select", "spec.toml", "--out", "owned"]) == 0
    manifest = json.loads((folder / "owned" / "selection.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in (folder / "owned").iterdir()) == ["model.keras", "model.tflite", "selection.json"]
    assert manifest["files"] == {name: file_digest(folder / "owned" / name) for name in ("model.keras", "model.tflite")}
    # A file an earlier select wrote that this one does not (a table's encoding) goes: never left stale.
    manifest["files"]["preprocessing.json"] = "0" * 64
    (folder / "owned" / "selection.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "owned" / "preprocessing.json").write_text("{}\n", encoding="utf-8")
    assert main(["select", "spec.toml", "--out", "owned"]) == 0
    assert sorted(p.name for p in (folder / "owned").iterdir()) == ["model.keras", "model.tflite", "selection.json"]
