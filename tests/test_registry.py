"""camp.registry's served model: a batch of awkward files or wrong arrays gets one row per item, each bad
one with its own error (in process and through the registered MLflow pyfunc); an ensemble decodes once per
size and averages its members. What a client may send is tested in tests/test_serving_input.py."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from camp import registry, serving_input
from camp.preprocess import PreprocessConfig
from tests.fixtures.bad_files import CASES, SKIPPED, deny_reading

LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]


# -- the served model --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny untrained model saved as camp's bundle (what the registered pyfunc wraps)."""
    from camp.model import ModelConfig, build_model
    from camp.run_config import RunConfig
    from camp.runtime import configure_tensorflow
    from camp.train import save_model_bundle

    configure_tensorflow()
    config = RunConfig(preprocess=PreprocessConfig(mode="gray", size=16),
                       model=ModelConfig(conv_blocks=1, filters=4, dense_units=0, augmentation=False))
    model = build_model(config.preprocess.input_shape, len(LABELS), config.model)
    return save_model_bundle(model, config, LABELS, tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def classifier(bundle):
    from camp.registry import CampClassifier

    return CampClassifier().load_bundle(bundle)


def _check_rows(frame, expect_error: dict[int, str]):
    """Rows in `expect_error` (index -> text) carry that error and no label; the others a label."""
    probabilities = frame[[f"p_{label}" for label in LABELS]].to_numpy(dtype=float, na_value=np.nan)
    for index in range(len(frame)):
        if index in expect_error:
            assert frame.loc[index, "label"] == "" and np.isnan(probabilities[index]).all(), index
            assert expect_error[index] in frame.loc[index, "error"], (index, frame.loc[index, "error"])
        else:
            assert frame.loc[index, "error"] == "" and frame.loc[index, "label"] in LABELS, index
            assert abs(probabilities[index].sum() - 1) < 1e-4


def test_served_model_answers_every_item_of_a_batch_of_bad_files(classifier, case_files, monkeypatch):
    deny_reading(monkeypatch)
    monkeypatch.setenv("CAMP_SERVE_PATHS", str(next(iter(case_files.values())).parent))  # the operator's opt-in
    names = list(CASES)
    frame = classifier.predict(None, [str(case_files[name]) for name in names])
    assert len(frame) == len(names)
    _check_rows(frame, {i: str(case_files[name]) for i, name in enumerate(names) if name in SKIPPED})
    for i, name in enumerate(names):
        if name in SKIPPED:
            assert CASES[name].reason in frame.loc[i, "error"]


def test_served_model_as_base64_bytes_names_the_item(classifier, case_files):
    names = [name for name in CASES if name != "no_permission"]
    encoded = [base64.b64encode(case_files[name].read_bytes()).decode("ascii") for name in names]
    frame = classifier.predict(None, __import__("pandas").DataFrame({"image": encoded}))
    _check_rows(frame, {i: f"item {i}: " for i, name in enumerate(names) if name in SKIPPED})


def test_served_model_refuses_wrong_arrays_with_the_expected_shape(classifier):
    good = np.full((40, 30, 3), 200, np.uint8)
    batch = [good, good.astype(np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8),
             np.zeros((2, 4, 4, 3), np.uint8), good[..., 0], good.astype(bool), "not a path or base64 ~~", None, 3.5]
    frame = classifier.predict_images(batch)
    expected = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
    _check_rows(frame, {1: "item 1: expected dtype uint8, got float32; send (H, W, 3) uint8 RGB", 2: expected,
                        3: expected, 4: expected, 6: "item 6: expected dtype uint8, got bool",
                        7: "item 7: not base64-encoded image bytes", 8: "item 8: expected a file path",
                        9: "got float"})
    # whole arrays through predict(): (N, H, W, C) is a batch, (H, W, C) one image, one row each
    assert len(classifier.predict(None, np.stack([good] * 3).astype(np.float64))) == 3
    one = classifier.predict(None, good.astype(np.float32))
    assert len(one) == 1 and "expected dtype uint8" in one.loc[0, "error"]
    assert len(classifier.predict(None, good[..., 0])) == 1 and classifier.predict(None, good[..., 0]).loc[0, "error"] == ""


def test_registered_pyfunc_keeps_per_item_errors_and_refuses_a_wrong_frame(bundle, isolated, case_files, monkeypatch):
    """Through MLflow's pyfunc (what `mlflow models serve` runs): per-item errors; a frame without the
    `image` column is an MlflowException naming it."""
    import mlflow
    import pandas as pd

    from camp import registry, tracking

    tracking.setup()
    good = case_files["gray_jpeg"]
    with mlflow.start_run():
        info = registry.log_pyfunc(bundle, good)
    served = mlflow.pyfunc.load_model(info.model_uri)
    monkeypatch.setenv("CAMP_SERVE_PATHS", str(good.parent))
    names = ["gray_jpeg", "zero_byte", "png_alpha", "corrupt_jpeg_scan", "huge", "text_as_jpg"]
    values = [str(case_files[name]) for name in names]
    values[2] = base64.b64encode(case_files["png_alpha"].read_bytes()).decode("ascii")
    frame = served.predict(pd.DataFrame({"image": values}))
    _check_rows(frame, {1: "empty file", 3: "corrupt JPEG", 5: "not a readable image"})
    with pytest.raises(mlflow.exceptions.MlflowException, match="image"):
        served.predict(pd.DataFrame({"picture": [str(good)]}))


def test_importing_the_served_model_prints_no_mlflow_type_hint_warning():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-W", "always", "-c", "import camp.registry"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Add type hints" not in result.stderr


def test_an_ensemble_decodes_each_image_once_and_mirrors_only_with_flip_tta(bundle, tmp_path, monkeypatch):
    """Members that share a preprocessing share its decoded inputs (serving cost grows with members only
    by their forward passes), and `tta: flip` in ensemble.json averages each image with its mirror."""
    import json
    import shutil

    from camp.model import predict_probabilities
    from camp.registry import CampClassifier

    ensemble_bundle = tmp_path / "ensemble"
    for name in ("0-a", "1-b"):
        shutil.copytree(bundle, ensemble_bundle / "members" / name)
    spec = {"labels": LABELS, "members": ["0-a", "1-b"], "weights": [0.5, 0.5], "tta": "flip"}
    (ensemble_bundle / "ensemble.json").write_text(json.dumps(spec))
    model = CampClassifier().load_bundle(ensemble_bundle)
    assert model.tta == "flip" and [m.tta for m in model.members] == ["flip", "flip"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 30, 3), dtype=np.uint8) for _ in range(3)]
    decoded = []
    real_decode = serving_input.decode_any
    monkeypatch.setattr(serving_input, "decode_any", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    served, errors = model.probabilities(images)
    assert not errors and len(decoded) == len(images)  # not once per member
    single = CampClassifier().load_bundle(bundle)
    x, rows, _ = serving_input.model_inputs(serving_input.decoded(images, single.preprocess.decode_reduction),
                                        single.preprocess)
    assert rows == [0, 1, 2]
    np.testing.assert_allclose(served, predict_probabilities(single.model, x, "flip"), atol=1e-5)
    mirrored = predict_probabilities(single.model, np.ascontiguousarray(x[:, :, ::-1]))
    np.testing.assert_allclose(served, (predict_probabilities(single.model, x) + mirrored) / 2, atol=1e-5)
    # members that preprocess differently (another crop, same decode size) still share one decode per image
    model.members[1].preprocess = dataclasses.replace(single.preprocess, crop_top=0.0)
    decoded.clear()
    served, errors = model.probabilities(images)
    assert not errors and len(decoded) == len(images)
    cropped = serving_input.model_inputs(serving_input.decoded(images, single.preprocess.decode_reduction),
                                     model.members[1].preprocess)[0]
    assert np.abs(cropped.astype(int) - x).max() > 0  # the crop did change the second member's input
    np.testing.assert_allclose(served, (predict_probabilities(single.model, x, "flip")
                                        + predict_probabilities(single.model, cropped, "flip")) / 2, atol=1e-5)
    spec["tta"] = "rotate"
    (ensemble_bundle / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="tta must be one of"):
        CampClassifier().load_bundle(ensemble_bundle)


def test_a_cascade_serves_its_gate_where_sure_and_sends_only_the_rest_to_every_member(bundle, tmp_path):
    """With `cascade` in ensemble.json the gate scores every image once, alone and unmirrored; the other
    member sees only the images the gate left, and those get the whole ensemble's average (the gate's plain
    pass reused under flip); an unreadable item is an error, never a gate answer."""
    import json
    import shutil

    from camp import cascade
    from camp.model import predict_probabilities
    from camp.registry import CampClassifier

    ensemble_bundle = tmp_path / "cascade"
    for name in ("0-a", "1-b"):
        shutil.copytree(bundle, ensemble_bundle / "members" / name)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (40, 30, 3), dtype=np.uint8) for _ in range(8)]
    single = CampClassifier().load_bundle(bundle)
    x, _, _ = serving_input.model_inputs(serving_input.decoded(images, single.preprocess.decode_reduction), single.preprocess)
    gate = predict_probabilities(single.model, x)
    threshold = float(np.median(gate.max(axis=1)))
    spec = {"labels": LABELS, "members": ["0-a", "1-b"], "weights": [0.5, 0.5], "tta": "flip",
            "cascade": {"gate": 0, "threshold": threshold}}
    (ensemble_bundle / "ensemble.json").write_text(json.dumps(spec))
    model = CampClassifier().load_bundle(ensemble_bundle)
    cropped_preprocess = dataclasses.replace(single.preprocess, crop_top=0.1)
    model.members[1].preprocess = cropped_preprocess  # so the two members differ
    cropped = serving_input.model_inputs(serving_input.decoded(images, single.preprocess.decode_reduction), cropped_preprocess)[0]
    seen = []

    class Spy:  # counts what the second member is asked to score
        def __init__(self, model):
            self.model = model

        def predict_on_batch(self, batch):
            seen.append(len(batch))
            return self.model.predict_on_batch(batch)

    model.members[1].model = Spy(model.members[1].model)
    served, errors = model.probabilities([*images, b"not an image"])
    whole = (predict_probabilities(single.model, x, "flip") + predict_probabilities(single.model, cropped, "flip")) / 2
    answered = cascade.exits(gate, threshold)
    assert 0 < answered.sum() < len(images)
    np.testing.assert_allclose(served[:-1], cascade.combine(gate, whole, threshold), atol=1e-5)
    assert seen == [2 * int((~answered).sum())]  # both views of the rest only
    assert [index for index, _ in errors] == [8] and np.isnan(served[-1]).all()
    spec["cascade"]["gate"] = 2
    (ensemble_bundle / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"ensemble.json: cascade gate must be a member index in \[0, 2\)"):
        CampClassifier().load_bundle(ensemble_bundle)


@pytest.mark.parametrize("uri, message", [
    ("models:/camp-classifier@champion", "no such registered model version"),
    ("models:/camp-classifier/7", "no such registered model version"),
    ("models:/camp-classifier", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
    ("runs:/abc", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
])
def test_resolve_version_names_the_uri_and_the_store(isolated, uri, message):
    from camp import tracking

    tracking.setup()
    with pytest.raises(ValueError, match=message) as error:
        registry.resolve_version(uri)
    assert uri in str(error.value)


def test_speed_batches_are_distinct_requests_and_skip_files_gone(tmp_path):
    """Timing the same request twice would flatter a model that remembers a request (classical.FeatureMemo)."""
    from camp.registry import client_batches, seconds_per_image

    paths = []
    for index in range(5):  # more files than batches: every batch is another request
        path = tmp_path / f"{index}.jpg"
        path.write_bytes(bytes([index]) * 10)
        paths.append(path)
    batches = client_batches([*paths, tmp_path / "gone.jpg"], size=7, count=4)
    assert len(batches) == 4 and all(len(batch) == 7 for batch in batches)
    assert len({tuple(batch) for batch in batches}) == 4
    assert base64.b64decode(batches[1][0]) == paths[1].read_bytes()  # each starts one file later, as base64
    seen = []
    assert seconds_per_image(seen.append, batches) >= 0 and seen == batches  # the first is the warm-up
    with pytest.raises(ValueError, match="none of 1"):
        client_batches([tmp_path / "gone.jpg"])
