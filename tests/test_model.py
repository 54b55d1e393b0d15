"""camp.model: the CNN's shapes, the class weights, the focal loss, and ModelConfig validation."""

from __future__ import annotations

import numpy as np
import pytest

from camp.model import ModelConfig, balanced_weights, build_model, make_loss, make_optimizer, training_seed

keras = pytest.importorskip("keras")


@pytest.mark.parametrize("input_shape, n_classes, knobs", [
    ((32, 32, 1), 5, dict(conv_blocks=2, filters=8)),
    ((16, 16, 3), 3, dict(conv_blocks=1, filters=4, batch_norm=False, dense_units=0, dropout=0.0)),
    ((8, 8, 1), 5, dict(conv_blocks=6, filters=4, augmentation=False, kernel_size=5)),  # pools stop at 1x1
    ((48, 48, 3), 2, dict(conv_blocks=3, filters=8, dense_units=16, kernel_size=7)),
])
def test_build_model_output_shape(input_shape, n_classes, knobs):
    model = build_model(input_shape, n_classes, ModelConfig(**knobs))
    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, n_classes)
    assert model.inputs[0].dtype == "uint8"
    batch = np.random.default_rng(0).integers(0, 256, (3, *input_shape), dtype=np.uint8)
    probabilities = model.predict(batch, verbose=0)
    assert probabilities.shape == (3, n_classes)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_architecture_knobs_change_the_model():
    small = build_model((32, 32, 1), 5, ModelConfig(conv_blocks=2, filters=8, dense_units=0))
    wider = build_model((32, 32, 1), 5, ModelConfig(conv_blocks=2, filters=16, dense_units=0))
    deeper = build_model((32, 32, 1), 5, ModelConfig(conv_blocks=3, filters=8, dense_units=0))
    assert small.count_params() < wider.count_params()
    assert small.count_params() < deeper.count_params()
    names = [layer.__class__.__name__ for layer in small.layers]
    assert names.count("Conv2D") == 4 and names.count("MaxPooling2D") == 2 and names[1] == "Rescaling"
    assert "RandomFlip" in names
    plain = build_model((32, 32, 1), 5, ModelConfig(conv_blocks=2, filters=8, batch_norm=False, augmentation=False))
    plain_names = [layer.__class__.__name__ for layer in plain.layers]
    assert "BatchNormalization" not in plain_names and "RandomFlip" not in plain_names


def test_batch_norm_momentum_sets_every_batch_norm_layer():
    import keras

    def momenta(**knobs):
        model = build_model((32, 32, 1), 5, ModelConfig(conv_blocks=2, filters=8, **knobs))
        return {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta() == {0.99}  # Keras' own default, what every trial before the knob used
    assert momenta(batch_norm_momentum=0.9) == {0.9}


def test_balanced_weights():
    weights = balanced_weights(np.array([0, 0, 0, 1]), 3)
    assert np.allclose(weights, [4 / (2 * 3), 4 / (2 * 1), 0.0])  # n / (k * count); absent class 0
    assert np.allclose(balanced_weights(np.array([0, 1, 2, 0, 1, 2]), 3), 1.0)
    y = np.array([0] * 90 + [1] * 10)
    weights = balanced_weights(y, 2)
    assert np.isclose((weights[y]).sum(), len(y))  # the weighted sample count is preserved
    assert weights[1] / weights[0] == pytest.approx(9.0)


def loss_values(loss, y_true, y_pred) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(loss(ops.convert_to_tensor(y_true, "float32"),
                                                ops.convert_to_tensor(y_pred, "float32"))))


def test_focal_loss_is_finite_and_lower_for_confident_correct_predictions():
    weights = balanced_weights(np.array([0, 0, 1, 2, 3, 4]), 5)
    loss = make_loss(ModelConfig(loss_weighting="focal", focal_gamma=2.0), weights)
    y_true = np.eye(5)[[0, 0, 0, 0, 1]]
    y_pred = np.array([
        [0.96, 0.01, 0.01, 0.01, 0.01],  # confident, right
        [0.40, 0.15, 0.15, 0.15, 0.15],  # unsure, right
        [0.01, 0.96, 0.01, 0.01, 0.01],  # confident, wrong
        [1.00, 0.00, 0.00, 0.00, 0.00],  # saturated: clipped, still finite
        [1.00, 0.00, 0.00, 0.00, 0.00],  # saturated and wrong
    ])
    values = loss_values(loss, y_true, y_pred)
    assert values.shape == (5,)
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert values[0] < values[1] < values[2]
    assert values[3] < values[0]
    assert values[4] > values[2]


def test_focal_loss_reduces_to_cross_entropy_at_gamma_zero():
    weights = np.ones(4)
    focal = make_loss(ModelConfig(loss_weighting="focal", focal_gamma=0.0, focal_alpha="none"), weights)
    y_true = np.eye(4)[[0, 1, 2, 3]]
    y_pred = np.random.default_rng(0).dirichlet(np.ones(4), size=4)
    expected = -np.log(y_pred[np.arange(4), [0, 1, 2, 3]])
    assert np.allclose(loss_values(focal, y_true, y_pred), expected, rtol=1e-4)
    # and the focusing term makes easy examples count for less than cross-entropy does
    focused = make_loss(ModelConfig(loss_weighting="focal", focal_gamma=2.0, focal_alpha="none"), weights)
    assert np.all(loss_values(focused, y_true, y_pred) < expected)


def test_balanced_focal_alpha_weights_rare_classes_up():
    weights = balanced_weights(np.array([0] * 9 + [1]), 2)
    loss = make_loss(ModelConfig(loss_weighting="focal", focal_alpha="balanced"), weights)
    same_mistake = np.array([[0.3, 0.7], [0.7, 0.3]])
    common_wrong, rare_wrong = loss_values(loss, np.eye(2)[[0, 1]], same_mistake)
    assert rare_wrong > common_wrong * 5


def test_other_weightings_use_categorical_cross_entropy():
    for weighting in ("none", "balanced"):
        loss = make_loss(ModelConfig(loss_weighting=weighting, label_smoothing=0.1), np.ones(3))
        assert isinstance(loss, keras.losses.CategoricalCrossentropy)


@pytest.mark.parametrize("name, cls", [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD"), ("rmsprop", "RMSprop")])
def test_make_optimizer(name, cls):
    optimizer = make_optimizer(ModelConfig(optimizer=name, learning_rate=0.01))
    assert optimizer.__class__.__name__ == cls
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


@pytest.mark.parametrize("name, value", [
    ("conv_blocks", 0), ("conv_blocks", 7), ("filters", 2), ("kernel_size", 4), ("dropout", 1.0),
    ("dense_units", -1), ("optimizer", "lion"), ("learning_rate", 0.0), ("learning_rate", 2.0), ("momentum", 1.0),
    ("weight_decay", -0.1), ("batch_size", 0), ("max_epochs", 0), ("patience", 0), ("loss_weighting", "inverse"),
    ("focal_gamma", -1.0), ("focal_gamma", 11.0), ("focal_alpha", "uniform"), ("label_smoothing", 0.5),
])
def test_invalid_model_config_names_the_knob(name, value):
    with pytest.raises(ValueError, match=name):
        ModelConfig(**{name: value})


def _rate(schedule, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decaying_schedules_warm_up_then_reach_zero_at_max_epochs(schedule):
    from camp.model import learning_rate

    config = ModelConfig(learning_rate=0.01, lr_schedule=schedule, warmup_epochs=2, max_epochs=10)
    rate = learning_rate(config, steps_per_epoch=5)
    assert _rate(rate, 0) < 0.005  # warm-up starts low
    assert _rate(rate, 10) == pytest.approx(0.01, rel=0.05)  # peak after 2 epochs of 5 steps
    assert _rate(rate, 30) < _rate(rate, 15) < 0.01  # then decays
    assert _rate(rate, 50) == pytest.approx(0.0, abs=1e-6)  # zero at max_epochs * steps_per_epoch


def test_constant_schedule_is_a_plain_rate_and_warmup_alone_rises_then_holds():
    from camp.model import learning_rate

    assert learning_rate(ModelConfig(learning_rate=0.02), 7) == 0.02
    rate = learning_rate(ModelConfig(learning_rate=0.02, warmup_epochs=1, max_epochs=4), 10)
    assert _rate(rate, 0) < _rate(rate, 5) < 0.02
    assert _rate(rate, 10) == pytest.approx(0.02) and _rate(rate, 39) == pytest.approx(0.02)


def test_scheduled_optimizer_steps_follow_the_schedule():
    optimizer = make_optimizer(ModelConfig(optimizer="adamw", learning_rate=0.01, lr_schedule="cosine",
                                           max_epochs=2), steps_per_epoch=3)
    assert isinstance(optimizer.learning_rate, (float, np.floating)) or hasattr(optimizer, "_learning_rate")
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(6)) == pytest.approx(0.0, abs=1e-7)


def test_residual_blocks_add_shortcuts_and_still_train():
    plain = build_model((32, 32, 1), 5, ModelConfig(conv_blocks=2, filters=8, block="plain"))
    residual = build_model((32, 32, 1), 5, ModelConfig(conv_blocks=2, filters=8, block="residual"))
    names = [layer.__class__.__name__ for layer in residual.layers]
    assert names.count("Add") == 2 and "Add" not in [layer.__class__.__name__ for layer in plain.layers]
    assert residual.count_params() > plain.count_params()  # the 1x1 projections
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (16, 32, 32, 1), dtype=np.uint8), np.eye(5)[rng.integers(0, 5, 16)]
    residual.compile(optimizer=make_optimizer(ModelConfig(lr_schedule="linear", max_epochs=1), 1),
                     loss="categorical_crossentropy")
    history = residual.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("name, value", [("family", "xgboost"), ("block", "dense"), ("lr_schedule", "step"),
                                         ("warmup_epochs", -1), ("warmup_epochs", 20), ("hog_cell", 1),
                                         ("hog_orientations", 1), ("hog_c", 0.0), ("replica", -1),
                                         ("replica", 1000), ("replica", True), ("replica", 1.5),
                                         ("batch_norm_momentum", 1.0), ("batch_norm_momentum", -0.1)])
def test_invalid_new_knobs_name_themselves(name, value):
    with pytest.raises(ValueError, match=name):
        ModelConfig(**{name: value})


def test_replicas_get_distinct_seeds_in_numpys_range():
    seeds = {training_seed(seed, ModelConfig(replica=replica)) for seed in (0, 42, 2 ** 32 - 1) for replica in (0, 1, 999)}
    assert len(seeds) == 9 and all(0 <= seed < 2 ** 32 for seed in seeds)
    assert training_seed(42, ModelConfig()) == 42  # replica 0 is the run's own seed: old runs reproduce


def test_flip_tta_averages_each_image_with_its_mirror():
    from camp.model import predict_probabilities

    class LeftHeavy:  # "probability" of class 0: how bright the left half is
        def predict(self, x, batch_size=None, verbose=0):
            left = x[:, :, : x.shape[2] // 2].mean(axis=(1, 2, 3)) / 255
            return np.stack([left, 1 - left], axis=1)

    x = np.zeros((2, 4, 4, 1), np.uint8)
    x[0, :, :2] = 255  # bright on the left; its mirror is bright on the right
    np.testing.assert_allclose(predict_probabilities(LeftHeavy(), x), [[1, 0], [0, 1]])
    np.testing.assert_allclose(predict_probabilities(LeftHeavy(), x, "flip"), [[0.5, 0.5], [0, 1]])
    with pytest.raises(ValueError, match="tta must be one of"):
        predict_probabilities(LeftHeavy(), x, "rotate")
