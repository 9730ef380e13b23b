"""The training loop: the curves it reports, early stopping, class weights, divergence, the hook."""

from __future__ import annotations

import numpy as np
import pytest

from tradeoff_search import Dataset
from tradeoff_search.space._families import build_model
from tradeoff_search.space._space import Candidate, Recipe
from tradeoff_search.spec._sections import TrainingSection
from tradeoff_search.trial._training import TrainingDivergedError, predict_classes, train

MLP = Candidate(units=(32,), activation="relu", dropout=0.0, batch_norm=False)


def _recipe(**changes) -> Recipe:
    return Recipe(**{**dict(optimizer="adam", learning_rate=3e-3, schedule="constant", batch_size=32), **changes})


@pytest.fixture(scope="module")
def digits() -> Dataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    return Dataset(x[:600], y[:600], x[600:900], y[600:900])


def _loss_and_accuracy(model, data: Dataset) -> tuple[float, float]:
    import keras

    probabilities = model(data.x_val, training=False)
    loss = float(keras.losses.SparseCategoricalCrossentropy()(data.y_val, probabilities))
    return loss, float(np.mean(predict_classes(model, data.x_val) == data.y_val))


def test_curves_are_the_models_own_and_the_best_weights_are_restored(digits: Dataset) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(MLP, digits.input_shape, digits.n_classes)
    result = train(model, _recipe(learning_rate=0.05), digits, TrainingSection(max_epochs=12, patience=2))

    curves = result.history
    assert set(curves) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == result.epochs for values in curves.values())
    best = int(np.argmin(curves["val_loss"]))
    assert result.epochs < 12 and result.epochs == best + 1 + 2  # stopped after 2 epochs without progress
    assert curves["train_accuracy"][-1] > 0.9  # it learned
    loss, accuracy = _loss_and_accuracy(model, digits)
    assert loss == pytest.approx(curves["val_loss"][best], rel=1e-4)
    assert accuracy == pytest.approx(curves["val_accuracy"][best])


def test_the_hook_sees_every_epoch_and_can_stop_training(digits: Dataset) -> None:
    seen: list[tuple[int, float]] = []

    def stop_after_three(epoch: int, logs: dict[str, float]) -> bool:
        seen.append((epoch, logs["val_accuracy"]))
        return epoch == 3

    model = build_model(MLP, digits.input_shape, digits.n_classes)
    result = train(model, _recipe(), digits, TrainingSection(max_epochs=10, patience=10), on_epoch_end=stop_after_three)
    assert result.epochs == 3
    assert seen == list(enumerate(result.history["val_accuracy"], start=1))


def test_class_weights_weigh_the_loss(digits: Dataset) -> None:
    """Every class weighted 0: no loss, no gradient, and the weights do not move."""
    weightless = Dataset(digits.x_train, digits.y_train, digits.x_val, digits.y_val,
                         class_weight=dict.fromkeys(range(10), 0.0))  # fmt: skip
    model = build_model(MLP, digits.input_shape, digits.n_classes)
    before = [w.copy() for w in model.get_weights()]
    result = train(model, _recipe(), weightless, TrainingSection(max_epochs=2, patience=5))
    assert result.history["train_loss"] == [0.0, 0.0]
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_diverging_model_raises(digits: Dataset) -> None:
    recipe = _recipe(optimizer="sgd", learning_rate=1e12, momentum=0.9)
    model = build_model(MLP, digits.input_shape, digits.n_classes)
    with pytest.raises(TrainingDivergedError, match="training diverged: loss nan at epoch 1"):
        train(model, recipe, digits, TrainingSection(max_epochs=3, patience=3))


def test_two_classes_train_one_sigmoid_unit(digits: Dataset) -> None:
    odd = Dataset(digits.x_train, digits.y_train % 2, digits.x_val, digits.y_val % 2)
    model = build_model(MLP, odd.input_shape, 2)
    result = train(model, _recipe(), odd, TrainingSection(max_epochs=5, patience=5))
    assert result.history["val_accuracy"][-1] > 0.8
    assert np.mean(predict_classes(model, odd.x_val) == odd.y_val) == pytest.approx(
        result.history["val_accuracy"][int(np.argmin(result.history["val_loss"]))]
    )


def test_a_trained_models_graphs_do_not_outlive_it(digits: Dataset) -> None:
    """TensorFlow's gradient registry used to keep every traced epoch function alive."""
    import gc

    import keras
    from tensorflow.python.framework.func_graph import FuncGraph

    def epoch_graphs() -> int:
        gc.collect()
        return sum(isinstance(o, FuncGraph) and o.name == "run_epoch" for o in gc.get_objects())

    before = epoch_graphs()
    for optimizer in ("adam", "sgd"):
        recipe = _recipe(optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else None)
        train(build_model(MLP, (64,), 10), recipe, digits, TrainingSection(max_epochs=2, patience=5))
        keras.backend.clear_session()
    assert epoch_graphs() == before
