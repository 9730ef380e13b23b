from __future__ import annotations

import numpy as np
import pytest

from tradeoff_search.space._families import _projected, build_model, contains, count_macs
from tradeoff_search.space._space import Candidate, Recipe


def _candidate(**changes) -> Candidate:
    base = dict(units=(16, 8), activation="relu", dropout=0.1, batch_norm=False)
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


def test_macs_of_dense_conv_and_gru() -> None:
    import keras

    mlp = build_model(_candidate(), (64,), 10)
    assert count_macs(mlp) == 64 * 16 + 16 * 8 + 8 * 10
    inputs = keras.Input((40, 1))
    x = keras.layers.Conv1D(8, 5, padding="same")(inputs)
    x = keras.layers.Conv1D(16, 3, strides=2, padding="same")(x)
    x = keras.layers.GRU(12)(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    expected = 40 * 5 * 1 * 8 + 20 * 3 * 8 * 16 + 20 * 3 * (16 + 12) * 12 + 12 * 10
    assert count_macs(model) == expected


def test_macs_of_separable_recurrent_and_nested_layers_or_unknown() -> None:
    import keras

    from tradeoff_search.space._families import uncounted_layers

    inputs = keras.Input((40, 2))
    x = keras.layers.SeparableConv1D(8, 3, padding="same", name="separable")(inputs)
    x = keras.layers.LSTM(4, return_sequences=True)(x)
    x = keras.layers.Dense(5)(x)  # at each of the 40 steps
    head = keras.Sequential([keras.Input((40, 5)), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)])
    model = keras.Model(inputs, head(x))
    expected = 40 * (3 * 2 + 2 * 8) + 40 * 4 * (8 + 4) * 4 + 40 * 4 * 5 + 5 * 3
    assert count_macs(model) == expected and uncounted_layers(model) == []

    class Scale(keras.layers.Dense):  # a subclass may do anything: not counted as a Dense
        pass

    unknown = keras.Model(inputs, Scale(3, name="scale")(keras.layers.Flatten()(inputs)))
    assert count_macs(unknown) is None
    assert uncounted_layers(unknown) == ["scale (Scale)"]


def test_a_conv_net_with_fewer_parameters_but_more_macs_measures_slower() -> None:
    import keras

    from tradeoff_search import measure_latency

    inputs = keras.Input((64, 1))
    x = keras.layers.Conv1D(24, 5, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv1D(24, 5, padding="same", activation="relu")(x)
    cnn = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling1D()(x)))
    mlp = build_model(_candidate(units=(96,), dropout=0.0), (64,), 10)
    assert cnn.count_params() < mlp.count_params() and count_macs(cnn) > 10 * count_macs(mlp)
    cnn_ms = measure_latency(cnn, max_seconds=0.5).p10_ms
    mlp_ms = measure_latency(mlp, max_seconds=0.5).p10_ms
    assert cnn_ms > 3 * mlp_ms


FAMILIES = {
    "mlp": ({"units": (16,)}, (40, 1)),
    "cnn1d": ({"filters": (8, 16), "kernel_size": 5, "downsample": "max", "residual": True}, (40, 1)),
    "cnn2d": ({"filters": (4, 8), "kernel_size": 3, "downsample": "stride", "residual": True}, (8, 8, 1)),
    "gru": ({"gru_units": (8, 12)}, (12, 2)),
}


@pytest.mark.e2e
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_builds_trains_converts_and_measures(family: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from tradeoff_search import Dataset, measure_latency
    from tradeoff_search.cost._convert import to_tflite
    from tradeoff_search.spec._sections import TrainingSection
    from tradeoff_search.trial._training import predict_classes, train

    knobs, shape = FAMILIES[family]
    candidate = _candidate(**{"units": (), **knobs}, family=family, batch_norm=family != "gru")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, *shape)).astype(np.float32)
    y = np.arange(64) % 4
    data = Dataset(x[:48], y[:48], x[48:], y[48:])
    model = build_model(candidate, shape, 4)
    result = train(model, Recipe("adam", 1e-3, "constant", 32), data, TrainingSection(max_epochs=1))
    assert result.epochs == 1 and len(result.history["val_loss"]) == 1
    assert predict_classes(model, data.x_val).shape == (16,)

    expected = np.asarray(model(data.x_val, training=False))
    operators = []
    for signature in (True, False):  # the deployable file, and the faster one timing uses
        flatbuffer = to_tflite(model, signature=signature)
        operators.append(_operators(flatbuffer))
        interpreter = Interpreter(model_content=flatbuffer)
        (detail,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(detail["index"], [16, *shape])
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], data.x_val)
        interpreter.invoke()
        litert = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(litert, expected, atol=1e-4)
        assert bool(interpreter.get_signature_list()) == signature
    assert sorted(operators[0]) == sorted(operators[1])  # timed is deployed (a GRU's in another order)

    stats = measure_latency(flatbuffer, max_seconds=0.2)
    assert stats.value_ms > 0 and stats.model_bytes == len(flatbuffer)
    assert count_macs(model) > 0


def _cnn(filters: tuple[int, ...], **changes) -> Candidate:
    cnn = dict(units=(), family="cnn1d", filters=filters, kernel_size=3, downsample="none", residual=True)
    return _candidate(**{**cnn, **changes})


@pytest.mark.parametrize(
    ("candidate", "smaller", "expected"),
    [
        (_candidate(units=(32, 8)), _candidate(units=(16, 8)), True),
        (_candidate(units=(16, 8), dropout=0.3), _candidate(units=(16, 8)), True),  # dropout: no operator
        (_candidate(units=(16, 4)), _candidate(units=(16, 8)), False),  # one layer narrower
        (_candidate(units=(32, 8), activation="gelu"), _candidate(units=(16, 8)), False),
        (_candidate(units=(32, 8), batch_norm=True), _candidate(units=(16, 8)), True),  # folded by conversion
        (_candidate(units=(16, 8, 8)), _candidate(units=(16, 8)), True),  # an extra layer before the head
        (_candidate(units=(16, 8, 4)), _candidate(units=(16, 8)), False),  # it feeds the head less
        (_candidate(units=(16,)), _candidate(units=(16, 8)), False),
        (_cnn((16, 32)), _cnn((8, 16)), True),
        (_cnn((16, 16)), _cnn((8, 16)), False),  # the smaller one projects its second shortcut, this one not
        (_cnn((16, 16), residual=False), _cnn((8, 16), residual=False), True),
        (_cnn((16, 16, 16)), _cnn((16, 16)), True),  # an extra block costs more than it saves pooling
        (_cnn((16, 16, 8)), _cnn((16, 16)), False),  # its last block feeds the head less
        (_cnn((16, 32), kernel_size=5), _cnn((8, 16)), True),  # a larger kernel
        (_cnn((16, 32)), _cnn((8, 16), kernel_size=5), False),
        (_cnn((16, 32)), _cnn((8, 16), residual=False), True),  # a residual connection more
        (_cnn((16, 32), residual=False), _cnn((8, 16)), False),
        (_cnn((16, 32), downsample="max"), _cnn((8, 16), downsample="stride"), True),  # full convolution, then pool
        (_cnn((16, 32), downsample="stride"), _cnn((8, 16), downsample="max"), False),
        (_cnn((16, 32), downsample="max"), _cnn((8, 16)), False),  # no stride is no order
        (_cnn((16, 16), downsample="stride"), _cnn((8, 16), downsample="stride"), True),  # strides project all
        (
            _candidate(units=(), family="gru", gru_units=(16, 32), activation="tanh"),
            _candidate(units=(), family="gru", gru_units=(8,)),
            True,
        ),  # a GRU's activations are its own
        (_candidate(units=(), family="gru", gru_units=(8,)), _candidate(units=(16, 8)), False),
    ],
)
def test_a_candidate_contains_a_smaller_one_operator_by_operator(
    candidate: Candidate, smaller: Candidate, expected: bool
) -> None:
    assert contains(candidate, smaller, input_shape=(40, 1)) is expected


@pytest.mark.parametrize(
    ("candidate", "smaller", "input_shape", "expected"),
    [
        (_cnn((8,)), _cnn((4,)), (40, 1), True),
        (_cnn((8,)), _cnn((4,)), (40, 8), False),  # 8 channels in: its shortcut is the input, the other projects
        (_cnn((8,)), _cnn((4,)), None, False),  # unknown: taken at its worst, as above
        (_cnn((8,)), _cnn((8,)), None, True),
        (_cnn((8,), downsample="stride"), _cnn((4,), downsample="stride"), (40, 8), True),  # both downsample
        (_cnn((32, 32, 32), downsample="stride"), _cnn((8, 16, 32), downsample="stride"), (40, 1), True),
        (_cnn((32, 32, 32), downsample="stride"), _cnn((8, 16, 32), downsample="stride"), (2, 1), False),  # 1 step left
        (_cnn((32, 32, 32), downsample="stride"), _cnn((8, 16, 32), downsample="stride"), None, False),
    ],
)
def test_shortcut_projections_depend_on_the_input_shape(
    candidate: Candidate, smaller: Candidate, input_shape: tuple[int, ...] | None, expected: bool
) -> None:
    assert contains(candidate, smaller, input_shape=input_shape) is expected


@pytest.mark.parametrize("input_shape", [(40, 1), (40, 8), (3, 2), (2, 1), (8, 8, 1), (2, 2, 16), (1, 1, 3)])
@pytest.mark.parametrize("downsample", ["none", "stride", "max"])
def test_projected_shortcuts_are_those_the_builder_makes(input_shape: tuple[int, ...], downsample: str) -> None:
    family = "cnn2d" if len(input_shape) == 3 else "cnn1d"
    for filters in [(8, 8, 16), (16, 8, 8), (3, 3, 2)]:
        candidate = _cnn(filters, family=family, downsample=downsample)
        layers = {layer.name for layer in build_model(candidate, input_shape, 3).layers}
        built = [f"shortcut_{i}" in layers for i in range(len(filters))]
        assert _projected(candidate, input_shape) == built, (filters, input_shape, downsample)


def test_batch_norm_is_an_operator_only_outside_litert() -> None:
    with_batch_norm, without = _candidate(units=(32, 8), batch_norm=True), _candidate(units=(16, 8))
    assert contains(with_batch_norm, without, "litert")
    assert not contains(with_batch_norm, without, "tf")
    assert not contains(without, with_batch_norm, "tf")


@pytest.mark.parametrize(
    "larger",
    [_cnn((16, 16, 16)), _cnn((16, 16), kernel_size=5), _cnn((16, 16), downsample="max", residual=False)],
)
def test_operator_orders_are_litert_only(larger: Candidate) -> None:
    """Measured in LiteRT only: at runtime ``tf`` only equal operators and depths contain each other."""
    smaller = _cnn((16, 16), downsample="stride", residual=False) if larger.downsample == "max" else _cnn((16, 16))
    assert contains(larger, smaller, "litert")
    assert not contains(larger, smaller, "tf")


@pytest.mark.parametrize("family", ["mlp", "cnn1d", "cnn2d"])
def test_litert_conversion_folds_batch_norm_away(family: str) -> None:
    """What ``contains`` relies on: with or without batch norm, the same operators on the same shapes."""
    from tradeoff_search.cost._convert import to_tflite

    knobs, shape = FAMILIES[family]
    candidates = [_candidate(**{"units": (), **knobs}, family=family, batch_norm=norm) for norm in (False, True)]
    graphs = [_operators(to_tflite(build_model(candidate, shape, 4), signature=False)) for candidate in candidates]
    assert graphs[0] == graphs[1]
    assert any(name in ("FULLY_CONNECTED", "CONV_2D") for name, _ in graphs[0])


def _operators(flatbuffer: bytes) -> list[tuple[str, list[tuple[int, ...]]]]:
    """A LiteRT model's operators in order, each with the shapes of its inputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    shapes = {t["index"]: tuple(t["shape_signature"]) for t in interpreter.get_tensor_details()}
    details = interpreter._get_ops_details()
    return [(op["op_name"], [tuple(map(int, shapes.get(i, ()))) for i in op["inputs"]]) for op in details]
