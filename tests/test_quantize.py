"""camp.quantize: a Keras CNN converted to int8 weights predicts like the float model in any chunking; a
served bundle keeps its quantized CNNs only when the validation labels agree, serves them (or the Keras
models with $CAMP_SERVE_FLOAT=1), and falls back to Keras where TensorFlow has no interpreter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camp import quantize

LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]


@pytest.fixture(scope="module")
def keras_model():
    from camp.model import ModelConfig, build_model
    from camp.train import configure_tensorflow

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


def test_int8_weights_predict_like_the_float_model_in_any_chunking(keras_model):
    served = quantize.QuantizedModel(quantize.convert(keras_model))
    x = np.random.default_rng(1).integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    expected = np.asarray(keras_model.predict_on_batch(x))
    whole = served.predict_on_batch(x)
    assert whole.shape == expected.shape and np.abs(whole - expected).max() < 0.02
    for size in (1, 16, 17, 40, 3):  # full chunks and remainders, in an order that resizes both interpreters
        np.testing.assert_allclose(served.predict_on_batch(x[:size]), whole[:size], atol=0.02)
    assert served.predict_on_batch(x[:0]).shape == (0, len(LABELS))
    with pytest.raises(ValueError, match="uint8"):
        served.predict_on_batch(x.astype(np.float32))


def test_a_bundle_serves_int8_only_where_the_validation_labels_agree(bundle, images, monkeypatch):
    from camp.registry import CampClassifier

    monkeypatch.delenv(quantize.FLOAT_ENV, raising=False)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.01)  # no agreement is enough: the float model stays
    decision = quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)
    assert decision["serving"] == "float" and "agreed on" in decision["reason"] and decision["images"] == 12
    assert not (bundle / quantize.QUANTIZED_FILE).exists()
    assert not isinstance(CampClassifier().load_bundle(bundle).model, quantize.QuantizedModel)

    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    decision = quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)
    assert decision["serving"] == "int8" and 0.0 <= decision["agreement"] <= 1.0 and decision["members"] == 1
    served = CampClassifier().load_bundle(bundle)
    assert isinstance(served.model, quantize.QuantizedModel)
    frame = served.predict_files(images)
    assert (frame["error"] == "").all() and set(frame["label"]) <= set(LABELS)

    float_weights = CampClassifier().load_bundle(bundle, weights="float")  # the same bundle, its Keras weights
    assert not isinstance(float_weights.model, quantize.QuantizedModel)
    assert list(float_weights.keras_models()) == [bundle] and not served.keras_models()
    assert isinstance(CampClassifier().load_bundle(bundle).model, quantize.QuantizedModel)  # the default: served
    monkeypatch.setenv(quantize.FLOAT_ENV, "1")
    assert not isinstance(CampClassifier().load_bundle(bundle).model, quantize.QuantizedModel)
    with pytest.raises(ValueError, match="weights must be one of"):
        CampClassifier().load_bundle(bundle, weights="int4")


def test_quantizing_loads_each_keras_model_once(bundle, images, monkeypatch):
    import keras

    from camp.registry import CampClassifier

    monkeypatch.delenv(quantize.FLOAT_ENV, raising=False)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    loads, real_load = [], keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda *args, **kwargs: loads.append(args[0]) or real_load(*args, **kwargs))
    assert quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)["serving"] == "int8"
    assert len(loads) == 1  # the float scoring's model is the one converted


def test_without_an_interpreter_camp_serves_the_keras_model(bundle, images, monkeypatch):
    from camp.registry import CampClassifier

    monkeypatch.delenv(quantize.FLOAT_ENV, raising=False)
    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 0.0)
    assert quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)["serving"] == "int8"
    monkeypatch.setattr(quantize, "_interpreter_class", lambda: None)
    assert quantize.load(bundle) is None  # a bundle quantized elsewhere still loads, as float
    assert not isinstance(CampClassifier().load_bundle(bundle).model, quantize.QuantizedModel)
    (bundle / quantize.QUANTIZED_FILE).unlink()
    assert quantize.quantize_bundle(bundle, images, CampClassifier().load_bundle)["serving"] == "float"


def test_a_classical_bundle_has_nothing_to_quantize(tmp_path):
    (tmp_path / "members" / "0-trial-1").mkdir(parents=True)
    assert quantize.cnn_bundles(tmp_path) == []
    assert quantize.quantize_bundle(tmp_path, [], None) == {"serving": "float", "reason": "no CNN to quantize"}
