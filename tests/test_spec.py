from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tradeoff_search import SpecError, StudySpec
from tradeoff_search.rules import Categorical, FloatRange, IntRange
from tradeoff_search.spec._sections import micro_installed

from .conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_specs_load(path: Path) -> None:
    if path.name == "digits_images.toml" and not (REPO / "studies" / "data" / "digits_images").is_dir():
        # Its PNG files are generated (git-ignored), as the spec's comment says.
        script = REPO / "studies" / "make_digits_images.py"
        subprocess.run([sys.executable, str(script), "--per-class", "1"], check=True, capture_output=True)
    if (
        "ram_kb" in path.read_text(encoding="utf-8") and not micro_installed()
    ):  # refused where the micro runtime is missing
        with pytest.raises(SpecError, match=r"pip install 'tradeoff_search\[micro\]'"):
            StudySpec.load(path)
        return
    spec = StudySpec.load(path)
    assert spec.study.name == path.stem
    assert spec.metric_names[1] == "latency_ms"


def test_defaults_and_parsed_values(write_spec) -> None:
    spec = StudySpec.load(write_spec())
    assert spec.study.n_trials == 3 and spec.study.sampler == "tpe"
    assert spec.model.units == IntRange(4, 16, log=True)
    assert spec.optimizer.learning_rate == FloatRange(1e-4, 3e-2, log=True)
    assert spec.training.batch_size == Categorical((16, 32))
    assert spec.tracking.experiment == "tiny"
    assert len(spec.digest) == 16


def test_latency_batch_sizes(write_spec) -> None:
    assert StudySpec.load(write_spec()).latency.batch_sizes == (1,)
    spec = StudySpec.load(write_spec('[data]\nsource = "sklearn:iris"\n[latency]\nbatch_size = [32, 1]\n'))
    assert spec.latency.batch_sizes == (32, 1)  # the first is the objective's
    with pytest.raises(SpecError, match=r"latency\.batch_size = \[1, 0\]"):
        StudySpec.load(write_spec('[data]\nsource = "sklearn:iris"\n[latency]\nbatch_size = [1, 0]\n'))


def test_latency_device(write_spec) -> None:
    assert StudySpec.load(write_spec()).latency.device == "local"
    spec = StudySpec.load(write_spec('[data]\nsource = "sklearn:iris"\n[latency]\ndevice = "http://board:8765/"\n'))
    assert spec.latency.device == "http://board:8765"


def test_scalar_means_fixed_and_override(write_spec) -> None:
    spec = StudySpec.load(write_spec('[data]\nsource = "sklearn:wine"\n[model]\nunits = 32\nactivation = "relu"\n'))
    assert spec.model.units == IntRange(32, 32, log=True)
    assert spec.model.activation == Categorical(("relu",))
    assert spec.study.name == "spec"
    assert spec.override(n_trials=7).study.n_trials == 7
    with pytest.raises(SpecError, match="n_trials = 0"):
        spec.override(n_trials=0)


@pytest.mark.parametrize(
    ("text", "key", "value_shown"),
    [
        ('[data]\nsource = "sklearn:iris"\nsurce = 1\n', "data.surce", "1"),
        ('[data]\nsource = "sklearn:iris"\n[model]\nunits = [64, 8]\n', "model.units", "[64, 8]"),
        (
            '[data]\nsource = "sklearn:iris"\n[optimizer]\nname = ["adam", "lion"]\n',
            "optimizer.name",
            '["adam", "lion"]',
        ),
        (
            '[data]\nsource = "sklearn:iris"\n[optimizer]\nlearning_rate = [-0.1, 0.1]\n',
            "optimizer.learning_rate",
            "[-0.1, 0.1]",
        ),
        ('[data]\nsource = "sklearn:iris"\n[model]\nactivation = []\n', "model.activation", "[]"),
        ('[data]\nsource = "sklearn:iris"\n[model]\ndropout = [0.0, 1.0]\n', "model.dropout", "[0.0, 1.0]"),
        ('[data]\nsource = "sklearn:iris"\n[model]\nn_layers = [1.5, 2]\n', "model.n_layers", "[1.5, 2]"),
        ('[data]\nsource = "sklearn:iris"\n[study]\nn_trials = "10"\n', "study.n_trials", '"10"'),
        ('[data]\nsource = "sklearn:iris"\n[study]\nsampler = "cmaes"\n', "study.sampler", '"cmaes"'),
        ('[data]\nsource = "sklearn:mnist"\n', "data.source", '"sklearn:mnist"'),
        ('[data]\nsource = "csv:missing.csv"\ntarget = "y"\n', "data.source", '"csv:missing.csv"'),
        (
            '[data]\nsource = "sklearn:iris"\ntest_fraction = 0.5\nvalidation_fraction = 0.5\n',
            "data.validation_fraction",
            "0.5",
        ),
        ('[data]\nsource = "sklearn:iris"\n[training]\nbatch_size = [32, 32]\n', "training.batch_size", "[32, 32]"),
        ('[data]\nsource = "sklearn:iris"\n[model]\nbatch_norm = ["yes"]\n', "model.batch_norm", '["yes"]'),
        ('[study]\nname = "x"\n', "data", "null"),
        ('[data]\nsource = "sklearn:iris"\n[search]\nx = 1\n', "search", '{"x": 1}'),
        ('[data]\nsource = "sklearn:iris"\n[model\n', "(file)", ""),
        ('[data]\nsource = "sklearn:iris"\n[latency]\nquantization = "int4"\n', "latency.quantization", '"int4"'),
        (
            '[data]\nsource = "sklearn:iris"\n[latency]\nruntime = "tf"\nquantization = ["none", "int8"]\n',
            "latency.quantization",
            '["none", "int8"]',
        ),
        ('[data]\nsource = "sklearn:iris"\n[latency]\nio = "int8"\n', "latency.io", '"int8"'),
        ('[data]\nsource = "sklearn:iris"\n[latency]\ndevice = "board:8765"\n', "latency.device", '"board:8765"'),
        (
            '[data]\nsource = "sklearn:iris"\n[latency]\ndevice = "http://u:pw@b:1"\n',
            "latency.device",
            '"http://***@b:1"',
        ),
        ('[data]\nsource = "sklearn:iris"\n[latency]\ndevice = 8765\n', "latency.device", "8765"),
        (
            '[data]\nsource = "sklearn:iris"\n[latency]\nruntime = "tf"\ndevice = "http://b:1"\n',
            "latency.runtime",
            '"tf"',
        ),
    ],
)
def test_bad_spec_names_file_key_and_value(write_spec, text: str, key: str, value_shown: str) -> None:
    path = write_spec(text)
    with pytest.raises(SpecError) as caught:
        StudySpec.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key} = ")
    assert value_shown in message
    assert "expected" in message and "\n" not in message
    assert caught.value.key == key


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="readable TOML file"):
        StudySpec.load(tmp_path / "nope.toml")


def test_csv_needs_target(write_spec, tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"data.target = null"):
        StudySpec.load(write_spec('[data]\nsource = "csv:d.csv"\n'))


def test_to_dict_round_trips(write_spec) -> None:
    spec = StudySpec.load(write_spec())
    again = StudySpec.from_dict(spec.to_dict(), path=spec.path)
    assert again.model == spec.model and again.optimizer == spec.optimizer and again.training == spec.training


def test_families_and_input_shape(write_spec) -> None:
    spec = StudySpec.load(
        write_spec('[data]\nsource = "mnist1d"\ninput_shape = [40, 1]\n[model]\nfamilies = ["mlp", "cnn1d", "gru"]\n')
    )
    assert spec.data.input_shape == (40, 1) and spec.model.families == Categorical(("mlp", "cnn1d", "gru"))
    with pytest.raises(SpecError, match=r'model.families = \["cnn2d"\]: expected families that take inputs'):
        StudySpec.load(write_spec('[data]\nsource = "mnist1d"\ninput_shape = [40, 1]\n[model]\nfamilies = ["cnn2d"]\n'))
    with pytest.raises(SpecError, match=r"data.input_shape = \[40, 0\]"):
        StudySpec.load(write_spec('[data]\nsource = "mnist1d"\ninput_shape = [40, 0]\n'))
    with pytest.raises(SpecError, match=r"model\.families"):  # a conv net needs an explicit shape
        StudySpec.load(write_spec('[data]\nsource = "sklearn:digits"\n[model]\nfamilies = ["cnn1d"]\n'))
