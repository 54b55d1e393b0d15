"""camp.quantize: a Keras CNN converted to a TensorFlow Lite flatbuffer (float32 or int8 weights) predicts
like the Keras model in any chunking; a served bundle keeps int8 weights where the validation labels agree,
else float32 ones where those agree, serves it (or the Keras models with
$CAMP_SERVE_FLOAT=1), and falls back to Keras where TensorFlow has no interpreter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camp import quantize

LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]


@pytest.fixture(scope="module")
def keras_model():
    from camp.model import ModelConfig, build_model
    from camp.runtime import configure_tensorflow

    configure_tensorflow()
    return build_model((16, 16, 1), len(LABELS), ModelConfig(conv_blocks=2, filters=8, dense_units=16,
                                                              augmentation=False))


@pytest.fixture()
def bundle(tmp_path, keras_model):
    from camp.preprocess import PreprocessConfig
    from camp.run_config import RunConfig
    from camp.train import save_model_bundle

    config = RunConfig(preprocess=PreprocessConfig(mode="gray", size=16))
    return save_model_bundle(keras_model, config, LABELS, tmp_path / "bundle")


@pytest.fixture()
def images(tmp_path) -> list[str]:
    generator = np.random.default_rng(0)
    paths = []
    for index in range(12):
        path = tmp_path / f"{index}.jpg"
        cv2.imwrite(str(path), generator.integers(0, 256, (40, 30, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("precision, tolerance", [("float32", 1e-5), ("int8", 0.02)])
def test_flatbuffers_predict_like_the_keras_model_in_any_chunking(keras_model, precision, tolerance):
    served = quantize.LiteModel(quantize.convert(keras_model, precision))
    assert served.precision == precision
    x = np.random.default_rng(1).integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    expected = np.asarray(keras_model.predict_on_batch(x))
    whole = served.predict_on_batch(x)
    assert whole.shape == expected.shape and np.abs(whole - expected).max() < tolerance
    for size in (1, 16, 17, 40, 3):  # full chunks and remainders, in an order that resizes both interpreters
        np.testing.assert_allclose(served.predict_on_batch(x[:size]), whole[:size], atol=tolerance)
    assert served.predict_on_batch(x[:0]).shape == (0, len(LABELS))
    with pytest.raises(ValueError, match="uint8"):
        served.predict_on_batch(x.astype(np.float32))
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize.convert(keras_model, "int4")


def _rotated(model):
    """The same network with its output classes rotated by one: every image's label changes."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel, bias = clone.layers[-1].get_weights()
    clone.layers[-1].set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    return clone


def test_a_bundle_serves_a_flatbuffer_only_where_the_validation_labels_agree(bundle, images, monkeypatch):
    from camp.registry import CampClassifier

    monkeypatch.delenv(quantize.FLOAT_ENV, raising=False)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)  # no agreement is enough: the Keras model stays
    decision = quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)
    assert decision["serving"] == "float" and decision["images"] == 12
    assert "int8 on" in decision["reason"] and "float32 on 1.000" in decision["reason"]
    assert not (bundle / quantize.LITE_FILE).exists()
    assert not isinstance(CampClassifier().load_bundle(bundle).model, quantize.LiteModel)

    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.99)
    decision = quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)
    assert decision["serving"] == "int8" and decision["members"] == 1 and decision["agreement"] >= 0.99
    served = CampClassifier().load_bundle(bundle)
    assert isinstance(served.model, quantize.LiteModel)
    assert quantize.SERVING[served.model.precision] == decision["serving"]
    frame = served.predict_files(images)
    assert (frame["error"] == "").all() and set(frame["label"]) <= set(LABELS)

    float_weights = CampClassifier().load_bundle(bundle, weights="float")  # the same bundle, its Keras weights
    assert not isinstance(float_weights.model, quantize.LiteModel)
    assert list(float_weights.keras_models()) == [bundle] and not served.keras_models()
    assert isinstance(CampClassifier().load_bundle(bundle).model, quantize.LiteModel)  # the default: served
    monkeypatch.setenv(quantize.FLOAT_ENV, "1")
    assert not isinstance(CampClassifier().load_bundle(bundle).model, quantize.LiteModel)
    with pytest.raises(ValueError, match="weights must be one of"):
        CampClassifier().load_bundle(bundle, weights="int4")


def test_int8_weights_that_change_labels_give_way_to_float32(bundle, images, monkeypatch):
    from camp.registry import CampClassifier

    monkeypatch.delenv(quantize.FLOAT_ENV, raising=False)
    real = quantize.convert
    monkeypatch.setattr(quantize, "convert", lambda model, precision="int8": real(
        _rotated(model) if precision == "int8" else model, precision))
    decision = quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)
    assert decision["serving"] == "tflite-float32" and decision["agreement"] == 1.0
    assert CampClassifier().load_bundle(bundle).model.precision == "float32"


def test_quantizing_loads_each_keras_model_once(bundle, images, monkeypatch):
    import keras

    from camp.registry import CampClassifier

    monkeypatch.delenv(quantize.FLOAT_ENV, raising=False)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    loads, real_load = [], keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda *args, **kwargs: loads.append(args[0]) or real_load(*args, **kwargs))
    assert quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)["serving"] != "float"
    assert len(loads) == 1  # the float scoring's model is the one converted


def test_without_an_interpreter_camp_serves_the_keras_model(bundle, images, monkeypatch):
    from camp.registry import CampClassifier

    monkeypatch.delenv(quantize.FLOAT_ENV, raising=False)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    assert quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)["serving"] != "float"
    monkeypatch.setattr(quantize, "_interpreter_class", lambda: None)
    assert quantize.load(bundle) is None  # a bundle converted elsewhere still loads, as Keras
    assert not isinstance(CampClassifier().load_bundle(bundle).model, quantize.LiteModel)
    (bundle / quantize.LITE_FILE).unlink()
    assert quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)["serving"] == "float"


def test_a_classical_bundle_has_nothing_to_quantize(tmp_path):
    (tmp_path / "members" / "0-trial-1").mkdir(parents=True)
    assert quantize.cnn_bundles(tmp_path) == []
    assert quantize.quantize_bundle(tmp_path, [], None) == {"serving": "float", "reason": "no CNN to quantize"}
