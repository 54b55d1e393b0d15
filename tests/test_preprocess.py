"""camp.preprocess: the crop recipe (margins, box, output), knob validation, the config-keyed array cache
(concurrent writers, an unwritable cache); any encoded image decodes and preprocesses to the configured shape."""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from camp import images as image_io
from camp import preprocess
from camp.preprocess import PreprocessConfig, cut_margins, preprocess_image, preprocess_steps
from tests.synthetic import SHAPES, draw_garment

NO_MARGINS = dict(crop_top=0.0, crop_bottom=0.0, crop_left=0.0, crop_right=0.0)


def row_col_image(height: int, width: int) -> np.ndarray:
    """Channel 0 holds the row index, channel 1 the column index (mod 256)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = (np.arange(height) % 256)[:, None]
    image[..., 1] = (np.arange(width) % 256)[None, :]
    return image


def test_margins_cut_exactly_the_pixels_asked():
    image = row_col_image(100, 200)
    cut = cut_margins(image, PreprocessConfig())  # top 0.2, bottom 0.3, left 0.05, right 0.05
    assert cut.shape == (100 - 20 - 30, 200 - 10 - 10, 3)
    assert cut[0, 0, 0] == 20 and cut[-1, 0, 0] == 69  # rows 20..69 kept
    assert cut[0, 0, 1] == 10 and cut[0, -1, 1] == 189  # columns 10..189 kept
    only_top = cut_margins(image, PreprocessConfig(**{**NO_MARGINS, "crop_top": 0.2}))
    assert only_top.shape == (80, 200, 3) and only_top[0, 0, 0] == 20
    assert cut_margins(image, PreprocessConfig(**NO_MARGINS)).shape == image.shape


def test_margins_leave_a_one_pixel_image_alone():
    image = np.full((1, 1, 3), 7, np.uint8)
    assert cut_margins(image, PreprocessConfig()).shape == (1, 1, 3)


@pytest.mark.parametrize("shape", sorted(SHAPES.values()))
def test_recipe_box_lands_on_the_drawn_garment(shape):
    config = PreprocessConfig(**NO_MARGINS, scale=1.0, decode_reduction=1)
    rng = np.random.default_rng(sorted(SHAPES.values()).index(shape))
    for _ in range(3):
        image, (x, y, width, height) = draw_garment(shape, 240, 180, rng, background="plain")
        steps = preprocess_steps(image, config, reduction=1)
        bx, by, bw, bh = steps.box
        assert steps.working.shape == image.shape  # scale 1 at reduction 1: no resize
        assert abs(bx - x) <= 3 and abs(by - y) <= 3
        assert abs((bx + bw) - (x + width)) <= 3 and abs((by + bh) - (y + height)) <= 3


def test_box_follows_scale_and_reduction():
    """A photo decoded at 1/2 and scaled 0.75 is worked on at 0.75 of the original size."""
    rng = np.random.default_rng(5)
    image, (x, y, width, height) = draw_garment("circle", 240, 180, rng, background="plain")
    half = cv2.resize(image, (90, 120), interpolation=cv2.INTER_AREA)
    steps = preprocess_steps(half, PreprocessConfig(**NO_MARGINS, scale=0.75, decode_reduction=2))
    assert steps.working.shape == (180, 135, 3)
    bx, by, bw, bh = steps.box
    assert abs(bx - 0.75 * x) <= 4 and abs(by - 0.75 * y) <= 4
    assert abs(bw - 0.75 * width) <= 6 and abs(bh - 0.75 * height) <= 6


def test_box_rules_union_and_largest():
    image = np.full((200, 200, 3), 220, np.uint8)
    image[20:60, 20:60] = 30  # small square
    image[100:180, 90:190] = 30  # large rectangle
    base = dict(**NO_MARGINS, scale=1.0, decode_reduction=1)
    union = preprocess_steps(image, PreprocessConfig(**base, box_rule="union")).box
    largest = preprocess_steps(image, PreprocessConfig(**base, box_rule="largest")).box
    assert abs(union[0] - 20) <= 2 and abs(union[1] - 20) <= 2 and abs(union[0] + union[2] - 190) <= 2
    assert abs(largest[0] - 90) <= 2 and abs(largest[1] - 100) <= 2 and abs(largest[2] - 100) <= 3
    # min_area drops the small square even under the union rule
    filtered = preprocess_steps(image, PreprocessConfig(**base, box_rule="union", min_area=0.1)).box
    assert abs(filtered[0] - 90) <= 2


def test_blank_image_and_crop_method_none_use_the_whole_frame():
    blank = np.full((50, 40, 3), 200, np.uint8)
    config = PreprocessConfig(**NO_MARGINS, scale=1.0, decode_reduction=1)
    assert preprocess_steps(blank, config).box == (0, 0, 40, 50)
    image, _ = draw_garment("circle", 120, 90, np.random.default_rng(0), background="plain")
    assert preprocess_steps(image, dataclasses.replace(config, crop_method="none")).box == (0, 0, 90, 120)


@pytest.mark.parametrize("mode, channels", [("binary", 1), ("gray", 1), ("color", 3)])
@pytest.mark.parametrize("size", [8, 32, 64, 100])
def test_output_shape_and_dtype(mode, channels, size):
    image, _ = draw_garment("t_shape", 120, 90, np.random.default_rng(size), background="texture")
    config = PreprocessConfig(mode=mode, size=size)
    output = preprocess_image(image, config)
    assert config.input_shape == (size, size, channels)
    assert output.shape == (size, size, channels) and output.dtype == np.uint8


def test_color_mode_is_rgb_and_gray_is_luminance():
    blue = np.zeros((40, 40, 3), np.uint8)
    blue[..., 0] = 255  # BGR blue
    config = PreprocessConfig(**NO_MARGINS, crop_method="none", mode="color", size=8)
    assert preprocess_image(blue, config)[0, 0].tolist() == [0, 0, 255]
    gray = preprocess_image(blue, dataclasses.replace(config, mode="gray"))
    assert gray.shape == (8, 8, 1) and abs(int(gray[0, 0, 0]) - 29) <= 1  # 0.114 * 255


def test_preprocess_batch_matches_single_images():
    rng = np.random.default_rng(2)
    decoded = [draw_garment(shape, 60, 45, rng)[0] for shape in SHAPES.values()]
    config = PreprocessConfig(mode="gray", size=16)
    batch = preprocess.preprocess_batch(decoded, config)
    assert batch.shape == (5, 16, 16, 1) and batch.dtype == np.uint8
    for index, image in enumerate(decoded):
        assert np.array_equal(batch[index], preprocess_image(image, config))


@pytest.mark.parametrize("knobs, name", [
    ({"threshold_block": 4}, "threshold_block"),
    ({"threshold_block": 1}, "threshold_block"),
    ({"median_blur": 4}, "median_blur"),
    ({"median_blur": 1}, "median_blur"),
    ({"crop_top": 0.5, "crop_bottom": 0.45}, "crop_top + crop_bottom"),
    ({"crop_left": 0.6, "crop_right": 0.4}, "crop_left + crop_right"),
    ({"crop_top": -0.1}, "crop_top"),
    ({"crop_right": 1.0}, "crop_right"),
    ({"mode": "rgb"}, "mode"),
    ({"crop_method": "magic"}, "crop_method"),
    ({"box_rule": "smallest"}, "box_rule"),
    ({"decode_reduction": 3}, "decode_reduction"),
    ({"scale": 0.01}, "scale"),
    ({"size": 4}, "size"),
    ({"size": 512}, "size"),
    ({"morph_kernel": 0}, "morph_kernel"),
    ({"min_area": 1.0}, "min_area"),
    ({"threshold_c": 60}, "threshold_c"),
])
def test_invalid_knobs_are_named(knobs, name):
    with pytest.raises(ValueError) as error:
        PreprocessConfig(**knobs)
    assert name in str(error.value)


def test_cache_key_depends_on_every_knob_and_the_data():
    base = PreprocessConfig()
    assert base.cache_key("fp") == PreprocessConfig().cache_key("fp")
    assert base.cache_key("fp") != base.cache_key("other")
    assert base.cache_key("fp") != dataclasses.replace(base, threshold_c=2.5).cache_key("fp")
    assert base.cache_key("fp") != dataclasses.replace(base, mode="gray").cache_key("fp")


# -- property: any image, any valid knobs -> the model input shape ------------------------------------

FIELDS = {field.name for field in dataclasses.fields(PreprocessConfig)}
OPTIONAL_KNOBS = {  # knobs that exist only in some versions of PreprocessConfig are drawn when present
    "crop_pad": st.floats(0.0, 0.5), "mask_background": st.booleans(), "mask_fill": st.sampled_from(["mean", "zero"]),
}


@st.composite
def knobs(draw):
    values = dict(
        crop_top=draw(st.floats(0.0, 0.45)), crop_bottom=draw(st.floats(0.0, 0.45)),
        crop_left=draw(st.floats(0.0, 0.45)), crop_right=draw(st.floats(0.0, 0.45)),
        scale=draw(st.floats(0.05, 2.0)), decode_reduction=draw(st.sampled_from([1, 2, 4, 8])),
        crop_method=draw(st.sampled_from(preprocess.CROP_METHODS)),
        threshold_block=draw(st.integers(1, 25)) * 2 + 1, threshold_c=draw(st.floats(-50, 50)),
        median_blur=draw(st.sampled_from([0, 3, 5, 7])), morph_kernel=draw(st.integers(1, 31)),
        morph_close=draw(st.booleans()), morph_gradient=draw(st.booleans()),
        box_rule=draw(st.sampled_from(["union", "largest"])), min_area=draw(st.floats(0.0, 0.99)),
        mode=draw(st.sampled_from(["binary", "gray", "color"])), size=draw(st.integers(8, 64)),
    )
    values.update({name: draw(strategy) for name, strategy in OPTIONAL_KNOBS.items() if name in FIELDS})
    return values


@st.composite
def pictures(draw):
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    kind = draw(st.sampled_from(["noise", "flat", "garment"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "flat":
        return np.full((height, width, 3), draw(st.integers(0, 255)), np.uint8)
    background = draw(st.sampled_from(["plain", "texture", "pattern"]))
    shape = draw(st.sampled_from(sorted(SHAPES.values())))
    return draw_garment(shape, max(height, 20), max(width, 20), rng, background=background)[0]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=pictures(), values=knobs())
@example(image=np.zeros((1, 1, 3), np.uint8), values={"scale": 0.05, "decode_reduction": 1, "threshold_block": 51,
                                                      "median_blur": 7, "morph_kernel": 31})
@example(image=np.full((3, 500, 3), 128, np.uint8), values={"scale": 0.05, "crop_top": 0.45, "crop_bottom": 0.45,
                                                            "mode": "color"})
@example(image=np.random.default_rng(0).integers(0, 256, (500, 3, 3), dtype=np.uint8),
         values={"scale": 2.0, "decode_reduction": 8, "size": 8, "box_rule": "largest", "min_area": 0.9})
def test_any_image_and_valid_knobs_give_the_input_shape(image, values):
    config = PreprocessConfig(**values)  # the strategies draw valid knobs only (margins sum to <= 0.9)
    output = preprocess_image(image, config)
    assert output.shape == config.input_shape
    assert output.dtype == np.uint8


def _contour_boxes(edges: np.ndarray) -> np.ndarray:
    """The recipe as the camp wrote it: the boxes of the external contours."""
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return np.array([cv2.boundingRect(contour) for contour in contours]).reshape(-1, 4)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_area", [0.0, 0.002, 0.01])
def test_component_boxes_agree_with_the_recipes_contours(seed, min_area):
    """Shapes nested in holes, touching the frame, diagonal neighbours: the union and the largest box
    from connected components are the ones the notebook's findContours loop gives."""
    rng = np.random.default_rng(seed)
    binary = np.zeros((90, 120), np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(-10, 120)), int(rng.integers(-10, 90))
        size = (int(rng.integers(2, 30)), int(rng.integers(2, 30)))
        if rng.random() < 0.5:
            cv2.rectangle(binary, (x, y), (x + size[0], y + size[1]), 255, int(rng.choice([1, 2, -1])))
        else:
            cv2.ellipse(binary, (x, y), size, float(rng.integers(0, 180)), 0, 360, 255, int(rng.choice([1, -1])))
    binary[rng.random(binary.shape) < 0.01] = 255  # specks, some only diagonally connected
    gray = np.zeros_like(binary)
    for rule in ("union", "largest"):
        config = PreprocessConfig(box_rule=rule, min_area=min_area, morph_close=False, morph_gradient=False,
                                  morph_kernel=1)
        boxes = _contour_boxes(binary)
        boxes = boxes[boxes[:, 2] * boxes[:, 3] >= max(min_area * binary.size, 1)]
        box = preprocess.recipe_box(None, gray, binary, config)
        if rule == "union":
            expected = (boxes[:, 0].min(), boxes[:, 1].min(), (boxes[:, 0] + boxes[:, 2]).max() - boxes[:, 0].min(),
                        (boxes[:, 1] + boxes[:, 3]).max() - boxes[:, 1].min())
            assert box == tuple(int(value) for value in expected)
        else:  # equally large boxes may differ in place, never in size
            assert box[2] * box[3] == (boxes[:, 2] * boxes[:, 3]).max()
            assert any(tuple(candidate) == box for candidate in boxes)


# -- property: random images in every encoding, random valid knobs -> the configured shape --------------

@st.composite
def encoded_images(draw):
    """(bytes, height, width) of a random image in a random format, depth, channel layout and orientation."""
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    fmt = draw(st.sampled_from(["jpg", "png", "png16", "png_alpha", "png16_alpha", "gray_jpg", "gray_png", "bmp",
                                "webp", "tiff", "exif_jpg"]))
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if draw(st.booleans()):
        pixels[..., :3] = draw(st.integers(0, 255))  # flat
    if fmt == "exif_jpg":
        from PIL import Image

        exif = Image.Exif()
        orientation = draw(st.integers(1, 8))
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., :3]).save(buffer, format="JPEG", exif=exif.tobytes())
        shape = (width, height) if orientation >= 5 else (height, width)
        return buffer.getvalue(), shape
    image = {"png16": pixels[..., :3].astype(np.uint16) * 257, "png_alpha": pixels,
             "png16_alpha": pixels.astype(np.uint16) * 257, "gray_jpg": pixels[..., 0],
             "gray_png": pixels[..., 0]}.get(fmt, pixels[..., :3])
    extension = {"png16": ".png", "png_alpha": ".png", "png16_alpha": ".png", "gray_jpg": ".jpg",
                 "gray_png": ".png", "exif_jpg": ".jpg"}.get(fmt, f".{fmt}")
    ok, encoded = cv2.imencode(extension, image)
    assert ok
    return encoded.tobytes(), (height, width)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoded=encoded_images(), reduction=st.sampled_from([1, 2, 4, 8]), data_=st.data())
def test_any_encoded_image_decodes_and_preprocesses_to_the_configured_shape(encoded, reduction, data_):
    raw, (height, width) = encoded
    decoded = image_io.decode_bytes(raw, reduction)
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    assert abs(decoded.shape[0] - height / reduction) <= 1 and abs(decoded.shape[1] - width / reduction) <= 1
    config = PreprocessConfig(**{**data_.draw(knobs()), "decode_reduction": reduction})
    output = preprocess.preprocess_image(decoded, config)
    assert output.shape == config.input_shape and output.dtype == np.uint8
