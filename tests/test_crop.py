"""Crop methods: box IoU on synthetic garments with known boxes, output shapes, knob validation,
background masking, determinism, and that the defaults are still the camp recipe exactly."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from camp.preprocess import CROP_METHODS, PreprocessConfig, preprocess_batch, preprocess_image, preprocess_steps
from tests.garments import BACKGROUNDS, iou, make_scene, make_set

NEW_METHODS = ("border", "grabcut", "saliency")
#: whole photo in, no rescale: boxes come back in the synthetic image's own coordinates
WHOLE = dict(crop_top=0.0, crop_bottom=0.0, crop_left=0.0, crop_right=0.0, scale=1.0)


@pytest.fixture(scope="module")
def scenes():
    return make_set(per_background=10, seed=0)  # 30 scenes: 10 plain, 10 textured, 10 patterned


def box_of(image, config):
    return preprocess_steps(image, config, reduction=1).box


def test_box_iou_on_synthetic_garments(scenes):
    table = {}
    for method in CROP_METHODS:
        config = PreprocessConfig(crop_method=method, **WHOLE)
        scores = {kind: [] for kind in BACKGROUNDS}
        for background, _, image, truth, _ in scenes:
            scores[background].append(iou(box_of(image, config), truth))
        table[method] = {kind: float(np.mean(values)) for kind, values in scores.items()}
        table[method]["mean"] = float(np.mean([v for values in scores.values() for v in values]))
    print("\nbox IoU with the truth, 30 synthetic scenes (mean per background):")
    for method, row in table.items():
        print(f"  {method:9s} " + "  ".join(f"{kind} {value:.3f}" for kind, value in row.items()))
    best = max(table, key=lambda method: table[method]["mean"])
    # Measured (OpenCV 5.0, numpy 2.4, seed 0): border 0.940, grabcut 0.940, saliency 0.558,
    # recipe 0.306, none 0.305. 0.85 leaves ~0.09 for k-means / GrabCut differences across OpenCV
    # builds while still failing any method that keeps background (a whole-frame box scores ~0.3).
    assert table[best]["mean"] >= 0.85, table
    assert best in NEW_METHODS
    # the issue in one line: on every background kind the edge recipe boxes the whole frame
    assert table["recipe"]["mean"] < 0.5
    for method in ("border", "grabcut"):  # both background models beat the recipe everywhere
        assert all(table[method][kind] > table["recipe"][kind] + 0.3 for kind in BACKGROUNDS), table[method]


@pytest.mark.parametrize("method", CROP_METHODS)
@pytest.mark.parametrize("mode,channels", [("binary", 1), ("gray", 1), ("color", 3)])
def test_output_shape_and_dtype(method, mode, channels):
    image, _, _ = make_scene("textured", "tshirt", np.random.default_rng(1), 200, 150)
    for mask_background in (False, True):
        config = PreprocessConfig(crop_method=method, mode=mode, size=40, mask_background=mask_background)
        output = preprocess_image(image, config)
        assert output.shape == config.input_shape == (40, 40, channels)
        assert output.dtype == np.uint8


@pytest.mark.parametrize("method", NEW_METHODS)
@pytest.mark.parametrize("shape", [(1, 1, 3), (6, 9, 3), (300, 20, 3)])
def test_tiny_flat_and_thin_images_do_not_fail(method, shape):
    flat = np.full(shape, 128, np.uint8)  # nothing to find: the whole frame
    config = PreprocessConfig(crop_method=method, mode="color", size=16, mask_background=True, **WHOLE)
    steps = preprocess_steps(flat, config, reduction=1)
    assert steps.output.shape == (16, 16, 3)
    assert steps.box == (0, 0, shape[1], shape[0])
    assert steps.mask.shape == shape[:2]


@pytest.mark.parametrize("knob,value", [
    ("crop_method", "magic"), ("crop_work_size", 16), ("crop_work_size", 96.5), ("crop_morph", -0.1),
    ("crop_morph", 0.5), ("component_keep", 1.5), ("border_width", 0.0), ("border_width", 0.4),
    ("border_clusters", 0), ("border_clusters", 9), ("border_clusters", 2.5), ("border_threshold", 0.5),
    ("border_threshold", 150.0), ("grabcut_margin", 0.0), ("grabcut_margin", 0.5), ("grabcut_iters", 0),
    ("grabcut_iters", 11), ("saliency_threshold", 0.1), ("saliency_threshold", 9.0), ("crop_pad", -0.1),
    ("crop_pad", 0.6), ("mask_background", "yes"), ("mask_fill", "blue"),
])
def test_invalid_knob_values_name_the_knob(knob, value):
    with pytest.raises(ValueError, match=knob):
        PreprocessConfig(**{knob: value})


@pytest.mark.parametrize("method", ["border", "grabcut"])
@pytest.mark.parametrize("fill", ["mean", "zero"])
def test_mask_background_blanks_only_the_background(method, fill):
    image, _, _ = make_scene("patterned", "jacket", np.random.default_rng(3), 240, 180)
    config = PreprocessConfig(crop_method=method, mode="gray", size=64, crop_pad=0.1, **WHOLE)
    plain = preprocess_steps(image, config, reduction=1)
    masked = preprocess_steps(image, dataclasses.replace(config, mask_background=True, mask_fill=fill), reduction=1)
    assert masked.box == plain.box
    x, y, w, h = masked.box
    crop_mask = cv2.resize(masked.mask[y:y + h, x:x + w], (64, 64), interpolation=cv2.INTER_AREA)
    background, garment = crop_mask == 0, crop_mask == 255  # output pixels made only of one or the other
    assert background.sum() > 100 and garment.sum() > 100  # the padded box shows both
    out, before = masked.output[:, :, 0], plain.output[:, :, 0]
    assert np.array_equal(out[garment], before[garment])  # garment untouched
    assert not np.array_equal(out[background], before[background])  # background changed ...
    assert len(np.unique(out[background])) == 1  # ... to one flat value
    if fill == "zero":
        assert (out[background] == 0).all()


def test_mask_background_is_a_no_op_without_a_mask():
    image, _, _ = make_scene("plain", "pants", np.random.default_rng(4), 240, 180)
    for method in ("recipe", "none"):
        config = PreprocessConfig(crop_method=method, mode="gray", size=32)
        steps = preprocess_steps(image, config)
        assert (steps.mask == 255).all()
        assert np.array_equal(preprocess_image(image, dataclasses.replace(config, mask_background=True)), steps.output)


def test_crop_pad_grows_the_box_inside_the_frame(scenes):
    image = scenes[0][2]
    tight = box_of(image, PreprocessConfig(crop_method="border", **WHOLE))
    padded = box_of(image, PreprocessConfig(crop_method="border", crop_pad=0.1, **WHOLE))
    assert padded[0] <= tight[0] and padded[1] <= tight[1]
    assert padded[2] > tight[2] and padded[3] > tight[3]
    assert padded[0] + padded[2] <= image.shape[1] and padded[1] + padded[3] <= image.shape[0]


@pytest.mark.parametrize("method", NEW_METHODS)
def test_same_image_same_output_in_any_thread(method, scenes):
    images = [scene[2] for scene in scenes[:6]] * 3  # k-means / GrabCut draw from OpenCV's per-thread RNG
    config = PreprocessConfig(crop_method=method, mode="gray", size=32)
    batch = preprocess_batch(images, config)
    assert all(np.array_equal(batch[i], batch[i % 6]) for i in range(len(images)))
    assert np.array_equal(batch[0], preprocess_image(images[0], config))


def _camp_recipe(decoded: np.ndarray) -> np.ndarray:
    """The camp's notebook recipe, written out once more: binary 32x32."""
    height, width = decoded.shape[:2]
    image = decoded[round(height * 0.2):height - round(height * 0.3), round(width * 0.05):width - round(width * 0.05)]
    image = cv2.resize(image, (round(image.shape[1] * 1.5), round(image.shape[0] * 1.5)),
                       interpolation=cv2.INTER_LINEAR)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    binary = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV, 15, 2)
    binary = cv2.medianBlur(binary, 5)
    kernel = np.ones((3, 3), np.uint8)
    edges = cv2.morphologyEx(cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel), cv2.MORPH_GRADIENT, kernel)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = np.array([cv2.boundingRect(contour) for contour in contours])
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    return cv2.resize(binary[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_AREA)[:, :, None]


def test_defaults_are_still_the_recipe_whatever_the_new_knobs(scenes):
    assert PreprocessConfig().crop_method == "recipe" and PreprocessConfig().mask_background is False
    retuned = PreprocessConfig(crop_work_size=200, crop_morph=0.1, component_keep=0.9, border_width=0.2,
                               border_clusters=7, border_threshold=50.0, grabcut_margin=0.2, grabcut_iters=7,
                               saliency_threshold=4.0, mask_background=True, mask_fill="zero")
    for _, _, image, _, _ in scenes[::5]:
        expected = _camp_recipe(image)  # decoded at 1/2, so scale 0.75 * reduction 2 = 1.5 on this image
        assert np.array_equal(preprocess_image(image, PreprocessConfig()), expected)
        assert np.array_equal(preprocess_image(image, retuned), expected)


def test_on_real_photos_background_models_stop_boxing_the_whole_frame(shared_data):
    from camp.images import decode_path

    paths = sorted(shared_data.glob("train/*/*.jpg"))[::100][:30]
    images = [decode_path(path, 2) for path in paths]

    def whole_frame_share(method):
        config = PreprocessConfig(crop_method=method, mode="gray", size=32, **{**WHOLE, "scale": 0.75})
        areas = []
        for image in images:
            steps = preprocess_steps(image, config)
            areas.append(steps.box[2] * steps.box[3] / (steps.working.shape[0] * steps.working.shape[1]))
        return float(np.mean(np.array(areas) >= 0.95))

    shares = {method: whole_frame_share(method) for method in ("recipe", "border", "grabcut")}
    print("\nshare of whole-frame boxes on 30 clothing-small photos:", shares)
    assert shares["recipe"] >= 0.7  # measured 0.93 on 200 photos (bench/crop.py)
    assert shares["border"] <= 0.25 and shares["grabcut"] <= 0.25  # measured about 0.05 each
