from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent

# A spec small enough for tests: tiny MLPs, two epochs.
TINY_SPEC = """
[study]
name = "tiny"
n_trials = 3
seed = 1

[data]
source = "sklearn:iris"

[latency]
max_seconds = 0.2

[model]
n_layers = [1, 2]
units = [4, 16]

[training]
batch_size = [16, 32]
max_epochs = 2
patience = 1
"""


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec file into the test's temp dir and return its path."""

    def write(text: str = TINY_SPEC, name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the temp dir, so the default ``mlruns/`` stores land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# A table's text column: 7 cities, 3 of them rare.
CITIES = ["paris"] * 6 + ["lyon"] * 5 + ["nice"] * 4 + ["lille"] * 3 + ["brest", "metz", "albi"]


def table_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Numbers, a text column of 7 cities (3 rare), a yes/no column, and a label that depends on all."""
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, rows)
    plan = rng.choice(["basic", "gold"], rows)
    age = rng.normal(40, 12, rows).round(1)
    label = np.where((city == "paris") | (plan == "gold") & (age > 40), "churned", "stayed")
    return pd.DataFrame({"age": age, "city": city, "plan": plan, "income": rng.normal(3, 1, rows).round(3),
                         "label": label})  # fmt: skip


def litert_outputs(tflite_path: str | Path, x: np.ndarray) -> np.ndarray:
    """What LiteRT's interpreter outputs for the rows ``x`` with the model in ``tflite_path``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
