"""camp.classical: HOG features, the HOG + logistic-regression family, its bundle and the served model."""

from __future__ import annotations

import numpy as np
import pytest

from camp.classical import HogLinear, hog_features, load


def _stripes(n: int, rng, vertical: bool) -> np.ndarray:
    images = rng.integers(0, 40, (n, 32, 32, 1)).astype(np.uint8)
    if vertical:
        images[:, :, ::4] = 220
    else:
        images[:, ::4, :] = 220
    return images


def test_hog_features_shape_and_gray_for_colour():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    features = hog_features(gray, cell=8, orientations=9)
    assert features.shape == (3, 3 * 3 * 2 * 2 * 9) and features.dtype == np.float32
    colour = np.repeat(gray, 3, axis=-1)
    assert np.allclose(hog_features(colour, 8, 9), features, atol=1e-2)
    with pytest.raises(ValueError, match="hog_cell 17"):
        hog_features(gray, cell=17, orientations=9)


def test_hog_features_of_a_batch_are_the_same_on_threads_as_in_one(monkeypatch):
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8)  # enough to be shared out among threads
    monkeypatch.setenv("CAMP_THREADS", "1")
    serial = hog_features(batch, cell=8, orientations=9)
    monkeypatch.setenv("CAMP_THREADS", "3")
    assert np.array_equal(hog_features(batch, cell=8, orientations=9), serial)


@pytest.mark.parametrize("shape, cell, orientations", [((40, 64, 64, 1), 8, 9), ((40, 64, 64, 1), 6, 12),
                                                       ((33, 48, 48, 3), 6, 9), ((5, 50, 37, 1), 8, 12)])
def test_batched_hog_features_are_scikit_images_hog_exactly(shape, cell, orientations, monkeypatch):
    """Models trained on the per-image features serve with the batched ones, and back: they must agree
    bit for bit, with sizes that are no multiple of the cell and on threads (>= 32 images)."""
    import sys

    from skimage.feature import hog

    from camp.classical import _gray

    monkeypatch.setenv("CAMP_THREADS", "2")
    x = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    reference = np.asarray([hog(gray, orientations=orientations, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
                                block_norm="L2-Hys", feature_vector=True) for gray in _gray(x)], dtype=np.float32)
    np.testing.assert_array_equal(hog_features(x, cell, orientations), reference)
    monkeypatch.setitem(sys.modules, "skimage.feature._hoghistogram", None)  # a scikit-image without it
    np.testing.assert_array_equal(hog_features(x, cell, orientations), reference)


def test_hog_linear_learns_orientation_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    x = np.concatenate([_stripes(20, rng, True), _stripes(20, rng, False)])
    y = np.array([0] * 20 + [2] * 20)  # class 1 absent: its column is still there, at 0
    model = HogLinear(cell=8, orientations=9, c=1.0, n_classes=3, balanced=True, seed=0).fit(x, y)
    probabilities = model.predict(x)
    assert probabilities.shape == (40, 3) and np.allclose(probabilities[:, 1], 0)
    assert (probabilities.argmax(axis=1) == y).mean() == 1.0
    model.save(tmp_path)
    assert np.allclose(load(tmp_path).predict(x), probabilities)
    with pytest.raises(ValueError, match="before fit"):
        HogLinear(8, 9, 1.0, 3, False, 0).predict(x)


def test_members_sharing_a_feature_memo_compute_each_batchs_features_once(tmp_path, monkeypatch):
    from camp import classical

    rng = np.random.default_rng(2)
    x = np.concatenate([_stripes(20, rng, True), _stripes(20, rng, False)])
    y = np.array([0] * 20 + [2] * 20)
    first, second = (HogLinear(8, 9, c, 3, True, 0).fit(x, y) for c in (1.0, 0.1))
    other_shape = HogLinear(16, 6, 1.0, 3, True, 0).fit(x, y)
    expected = [model.predict(x) for model in (first, second, other_shape)]
    calls = []
    real = classical.hog_features
    monkeypatch.setattr(classical, "hog_features", lambda *args: calls.append(args[1:]) or real(*args))
    memo = classical.FeatureMemo()
    for model in (first, second, other_shape):
        model.memo = memo
    for model, wanted in zip((first, second, other_shape), expected):
        np.testing.assert_array_equal(model.predict(x), wanted)  # the same values, shared or not
    assert calls == [(8, 9), (16, 6)]  # one HOG shape computed once for both members of it
    first.predict(x[::-1].copy())  # other images (same shape and size): computed anew, never confused
    assert calls == [(8, 9), (16, 6), (8, 9)]
    first.save(tmp_path)
    assert not hasattr(load(tmp_path), "memo")  # a memo is the served process's, never saved


@pytest.mark.slow
def test_hog_family_trains_logs_and_serves_like_a_cnn(isolated, synthetic_data):
    """`model.family: hog_linear` through `train()`: a bundle the served pyfunc loads, same predictions."""
    import mlflow

    from camp.config import DataConfig
    from camp.model import ModelConfig
    from camp.preprocess import PreprocessConfig
    from camp.registry import CampClassifier, log_pyfunc_for_run
    from camp.run_config import RunConfig
    from camp.train import train

    config = RunConfig(data=DataConfig(), preprocess=PreprocessConfig(crop_method="none", mode="gray", size=32),
                       model=ModelConfig(family="hog_linear", hog_cell=8), seed=3, data_path=str(synthetic_data))
    result = train(config, progress=False)
    log_pyfunc_for_run(result.run_id)  # the caller logs the served model (as `camp train` does)
    assert result.epochs_run == 1 and 0.0 <= result.value <= 1.0
    run = mlflow.get_run(result.run_id)
    assert run.data.params["model.family"] == "hog_linear"
    bundle = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="bundle",
                                                 dst_path=str(isolated / "bundle"))
    served = CampClassifier().load_bundle(bundle)
    paths = [str(synthetic_data / relpath) for relpath in result.val_relpaths]
    probabilities, errors = served._probabilities(paths, [])  # trusted local files
    assert not errors
    assert np.allclose(probabilities, result.val_probabilities, atol=1e-5)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    frame = pyfunc.unwrap_python_model().predict_files(paths[:3])
    assert list(frame.columns[:2]) == ["label", f"p_{served.labels[0]}"] and (frame["error"] == "").all()
