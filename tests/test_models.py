from __future__ import annotations

import numpy as np
import pytest

from tradeoff_search._models import build_model
from tradeoff_search._space import Candidate


def _candidate(**changes) -> Candidate:
    base = dict(units=(16, 8), activation="relu", dropout=0.1, batch_norm=False, optimizer="adam",
                learning_rate=1e-3, schedule="constant", batch_size=32)  # fmt: skip
    return Candidate(**{**base, **changes})


def test_mlp_layers_and_parameter_count() -> None:
    model = build_model(_candidate(), (64,), 10)
    assert model.count_params() == (64 * 16 + 16) + (16 * 8 + 8) + (8 * 10 + 10)
    assert model.output_shape == (None, 10)
    probabilities = np.asarray(model(np.zeros((3, 64), np.float32)))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_binary_head_is_one_sigmoid() -> None:
    model = build_model(_candidate(units=(4,)), (30,), 2)
    assert model.output_shape == (None, 1)
    assert model.layers[-1].get_config()["activation"] == "sigmoid"


@pytest.mark.parametrize("batch_norm", [False, True])
def test_batch_norm_and_image_inputs(batch_norm: bool) -> None:
    model = build_model(_candidate(batch_norm=batch_norm, dropout=0.0), (8, 8, 1), 3)
    names = [layer.__class__.__name__ for layer in model.layers]
    assert "Flatten" in names
    assert ("BatchNormalization" in names) == batch_norm
    assert "Dropout" not in names
