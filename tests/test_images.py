"""camp.images: decoding any input to upright 8-bit BGR, unreadable files named, the checksummed decode cache;
every awkward file of `tests/fixtures/bad_files.py` where it is decoded, the JPEG structure check (damage found,
real-world variants not flagged), and randomly damaged bytes (decoded or refused, never a crash)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camp import data, images, preprocess
from camp.data import Item
from camp.preprocess import PreprocessConfig
from tests.fixtures import bad_files as bad_file_cases  # `bad_files` is this module's fixture of three broken files
from tests.fixtures.bad_files import CASES, READ, SKIPPED, deny_reading
from tests.synthetic import make_image_folder

REAL_DECODE_ITEMS = images.decode_items


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def quadrants(height: int = 64, width: int = 96) -> np.ndarray:
    """A BGR image whose four quadrants have different colours (so any flip or rotation shows)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2:] = (0, 255, 0)
    image[height // 2:, : width // 2] = (0, 0, 255)
    image[height // 2:, width // 2:] = (255, 255, 255)
    return image


@pytest.fixture()
def bad_files(tmp_path) -> dict[str, Path]:
    good = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8))
    files = {"empty": tmp_path / "empty.jpg", "text": tmp_path / "notes.jpg", "truncated": tmp_path / "cut.jpg"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not an image\n" * 20)
    files["truncated"].write_bytes(good[: len(good) // 2])
    return files


@pytest.mark.parametrize("kind, reason", [("empty", "empty file"), ("text", "not a readable image"),
                                          ("truncated", "truncated JPEG")])
def test_unreadable_files_are_named(bad_files, kind, reason):
    path = bad_files[kind]
    with pytest.raises(images.UnreadableImage) as error:
        images.decode_path(path)
    assert str(path) in str(error.value) and reason in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(images.UnreadableImage, match="absent.jpg: cannot read"):
        images.decode_path(tmp_path / "absent.jpg")


def test_decode_items_skips_and_names_unreadable_files(tmp_path, bad_files):
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), quadrants())
    paths = [good, bad_files["empty"], bad_files["text"], good, bad_files["truncated"]]
    items = [Item(str(p), f"r{i}/{p.name}", "hat", 0, "train") for i, p in enumerate(paths)]
    decoded, skipped = images.decode_items(items, reduction=1, progress=False)
    assert [image is None for image in decoded] == [False, True, True, False, True]
    assert decoded[0].shape == (64, 96, 3)
    assert set(skipped) == {"r1/empty.jpg", "r2/notes.jpg", "r4/cut.jpg"}
    for relpath, reason in skipped.items():
        assert Path(relpath).name in reason


def test_png_with_alpha_16_bit_and_grayscale_decode_to_uint8_bgr(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128  # blue (BGRA order for cv2.imwrite), half transparent
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    deep = np.full((20, 30, 3), 257 * 100, np.uint16)
    deep[..., 2] = 65535
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    gray = np.full((20, 30), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "gray.jpg"), gray)
    for name in ("alpha.png", "deep.png", "gray.png", "gray.jpg"):
        decoded = images.decode_path(tmp_path / name, reduction=1)
        assert decoded.dtype == np.uint8 and decoded.shape == (20, 30, 3), name
    # half-transparent blue over white (camp composites alpha onto white; see camp/images.py)
    assert images.decode_path(tmp_path / "alpha.png", 1)[0, 0].tolist() == [227, 127, 127]
    assert images.decode_path(tmp_path / "deep.png", 1)[0, 0].tolist() == [100, 100, 255]
    assert abs(int(images.decode_path(tmp_path / "gray.jpg", 1)[5, 5, 1]) - 77) <= 2


@pytest.mark.parametrize("reduction, shape", [(1, (160, 120)), (2, (80, 60)), (4, (40, 30)), (8, (20, 15))])
def test_reduced_decode(tmp_path, reduction, shape):
    image = np.random.default_rng(1).integers(0, 255, (160, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert images.decode_path(tmp_path / "a.jpg", reduction).shape == (*shape, 3)
    assert images.decode_path(tmp_path / "a.png", reduction).shape == (*shape, 3)


def test_invalid_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        images.decode_bytes(jpeg_bytes(quadrants()), reduction=3)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("reduction", [2, 4])
def test_exif_orientation_is_applied_at_every_reduction(orientation, reduction):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(cv2.cvtColor(quadrants(), cv2.COLOR_BGR2RGB)).save(buffer, format="JPEG", quality=95,
                                                                      exif=exif.tobytes())
    data = buffer.getvalue()
    full = images.decode_bytes(data, reduction=1)  # OpenCV's full decode honours EXIF orientation
    assert full.shape[:2] == ((96, 64) if orientation >= 5 else (64, 96))
    reduced = images.decode_bytes(data, reduction=reduction)
    assert reduced.shape[:2] == (full.shape[0] // reduction, full.shape[1] // reduction)
    expected = cv2.resize(full, (reduced.shape[1], reduced.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - expected.astype(int)).mean() < 12


def test_from_array_and_decode_any(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB
    assert images.from_array(rgb, 1)[0, 0].tolist() == [0, 0, 255]  # BGR
    assert images.from_array(np.full((10, 12), 9, np.uint8), 1).shape == (10, 12, 3)
    assert images.from_array(np.zeros((10, 12, 4), np.uint8), 2).shape == (5, 6, 3)
    assert images.from_array(np.zeros((1, 1, 1), np.uint8), 8).shape == (1, 1, 3)
    with pytest.raises(images.UnreadableImage, match="item 3: expected dtype uint8"):
        images.from_array(np.zeros((4, 4, 3), np.float32), 1, "item 3")
    with pytest.raises(images.UnreadableImage, match="expected shape"):
        images.from_array(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(images.UnreadableImage, match="expected shape"):
        images.from_array(np.zeros((0, 4, 3), np.uint8))
    data = jpeg_bytes(quadrants())
    (tmp_path / "q.jpg").write_bytes(data)
    from_bytes = images.decode_any(data, 2)
    assert from_bytes.shape == (32, 48, 3)
    assert np.array_equal(images.decode_any(str(tmp_path / "q.jpg"), 2), from_bytes)
    assert np.array_equal(images.decode_any(tmp_path / "q.jpg", 2), from_bytes)
    assert np.array_equal(images.decode_any(bytearray(data), 2), from_bytes)
    with pytest.raises(images.UnreadableImage, match="row 1: expected a file path"):
        images.decode_any(3.5, 2, "row 1")


# -- data: every file, where it is decoded -------------------------------------------------------------

@pytest.mark.parametrize("name", SKIPPED)
def test_unreadable_file_is_refused_naming_it_and_what_to_do(name, case_files, monkeypatch):
    case = CASES[name]
    path = case_files[name]
    if name == "no_permission":
        deny_reading(monkeypatch)
    with pytest.raises(images.UnreadableImage) as error:
        images.decode_path(path, 2)
    message = str(error.value)
    assert str(path) in message and case.reason in message
    assert any(hint in message for hint in ("leave it out", "downscale it", "may read it")), message


@pytest.mark.parametrize("name", READ)
def test_readable_oddity_decodes_to_upright_uint8_bgr(name, case_files):
    case = CASES[name]
    reduction = 2 if name == "huge" else 1  # 8000x8000 at full size is 192 MB; 1/2 is how camp reads it
    decoded = images.decode_path(case_files[name], reduction)
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    assert decoded.shape[:2] == (case.shape[0] // reduction, case.shape[1] // reduction)


def test_png_alpha_is_composited_onto_white(case_files):
    decoded = images.decode_path(case_files["png_alpha"], 1)
    assert decoded[0, 0].tolist() == [255, 255, 255]  # transparent background: white, not its hidden black
    assert decoded[60, 45].tolist() == [40, 30, 90]  # the opaque garment keeps its colour
    # so the dark-on-light recipe finds the garment, not the whole frame
    config = PreprocessConfig(crop_top=0, crop_bottom=0, crop_left=0, crop_right=0, scale=1.0, decode_reduction=1)
    x, y, width, height = preprocess.preprocess_steps(decoded, config).box
    assert abs(x - 20) <= 3 and abs(y - 30) <= 3 and abs(width - 50) <= 6 and abs(height - 60) <= 6


@pytest.mark.parametrize("variant", ["rgba16", "gray_alpha", "palette_transparency", "webp", "exif_orientation"])
def test_every_kind_of_transparency_goes_white(variant):
    from PIL import Image

    rgba = np.zeros((24, 36, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)  # hidden colour of the transparent pixels (RGB)
    rgba[6:18, 6:18] = (200, 0, 0, 255)  # an opaque red square, top-left of centre
    buffer = io.BytesIO()
    if variant == "rgba16":
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA).astype(np.uint16) * 257)
        buffer.write(encoded.tobytes())
    elif variant == "gray_alpha":
        Image.fromarray(rgba).convert("LA").save(buffer, format="PNG")
    elif variant == "palette_transparency":
        palette = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        transparent = palette.getpixel((0, 0))
        palette.save(buffer, format="PNG", transparency=transparent)
    elif variant == "webp":
        ok, encoded = cv2.imencode(".webp", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_WEBP_QUALITY, 101])
        buffer.write(encoded.tobytes())
    else:  # stored rotated, EXIF orientation 6 turns it back: composited *and* upright
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(np.rot90(rgba, 1).copy()).save(buffer, format="PNG", exif=exif.tobytes())
    decoded = images.decode_bytes(buffer.getvalue(), 1, variant)
    assert decoded.shape == (24, 36, 3) and decoded.dtype == np.uint8
    assert decoded[1, 1].tolist() == [255, 255, 255], variant
    centre = decoded[12, 12].astype(int)
    assert centre.max() - centre.min() < 40 if variant == "gray_alpha" else abs(centre[2] - 200) <= 3
    assert decoded[20, 30].tolist() == [255, 255, 255]  # the square did not move (orientation)


def test_rgba_arrays_sent_to_the_served_model_also_go_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)  # opaque red; the rest transparent (hidden black)
    bgr = images.from_array(rgba, 1)
    assert bgr[0, 0].tolist() == [0, 0, 200] and bgr[3, 3].tolist() == [255, 255, 255]


def test_cmyk_jpeg_keeps_its_colours(case_files):
    decoded = images.decode_path(case_files["cmyk_jpeg"], 1)
    garment = decoded[50:70, 35:55].reshape(-1, 3).mean(axis=0)
    assert np.abs(garment - np.array([40, 30, 90])).max() < 20  # not inverted, not channel-swapped
    assert decoded[5, 80].mean() > 180


def test_exif_rotated_photo_is_decoded_upright(case_files):
    decoded = images.decode_path(case_files["exif_rotated"], 1)
    original = bad_file_cases.photo(120, 90, seed=7)
    assert decoded.shape == original.shape
    assert np.abs(decoded.astype(int) - original.astype(int)).mean() < 6


def test_16_bit_and_gray_images_match_their_8_bit_colour_selves(case_files):
    assert np.abs(images.decode_path(case_files["png_16bit"], 1).astype(int)
                  - bad_file_cases.photo(seed=4).astype(int)).max() <= 1
    gray = images.decode_path(case_files["gray_jpeg"], 1)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_oversized_image_is_refused_before_decoding(case_files, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("the decoder ran on an image over MAX_PIXELS")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    with pytest.raises(images.UnreadableImage, match=r"10000x10000 is 100 megapixels.*MAX_PIXELS"):
        images.decode_path(case_files["over_limit"])
    assert bad_file_cases.HUGE_SIDE ** 2 <= images.MAX_PIXELS  # 8000x8000 is under the limit: read


def test_pixel_limit_also_holds_without_a_header_size_and_for_arrays(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    ok, bmp = cv2.imencode(".bmp", np.zeros((40, 30, 3), np.uint8))  # BMP: size only known after decoding
    with pytest.raises(images.UnreadableImage, match="40 is 0 megapixels|30x40"):
        images.decode_bytes(bmp.tobytes(), 1, "big.bmp")
    with pytest.raises(images.UnreadableImage, match="item 2: 30x40"):
        images.from_array(np.zeros((40, 30, 3), np.uint8), 1, "item 2")
    assert images.decode_bytes(cv2.imencode(".bmp", np.zeros((20, 30, 3), np.uint8))[1].tobytes(), 1).shape == (20, 30, 3)


def test_chmod_000_file_is_skipped(tmp_path):
    path = bad_file_cases.write(tmp_path, ["no_permission"])["no_permission"]
    if not bad_file_cases.permission_is_enforced(tmp_path):
        pytest.skip(f"running as uid {os.getuid()}: file modes do not stop this user (root); the simulated case "
                    "test_unreadable_file_is_refused_naming_it_and_what_to_do[no_permission] covers it")
    with pytest.raises(images.UnreadableImage, match="Permission denied.*may read it"):
        images.decode_path(path)


def test_unlistable_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "d", per_class={"train": 2, "validation": 1}, size=(40, 30))
    real = Path.iterdir

    def iterdir(self):
        if self.name == "shoes":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(ValueError, match=r"train/shoes: cannot list the folder \(Permission denied\)"):
        data.load_dataset(root)


# -- JPEG structure: damage is found, real-world variants are not flagged -------------------------------

def _jpeg(params=(), image=None) -> bytes:
    image = bad_file_cases.photo(seed=11) if image is None else image
    ok, encoded = cv2.imencode(".jpg", image, list(params))
    return encoded.tobytes()


@pytest.mark.parametrize("variant", ["baseline", "progressive", "restart_intervals", "progressive_restarts",
                                     "optimized", "exif_thumbnail", "trailer", "two_images", "padded"])
def test_valid_jpeg_variants_pass_the_structure_check(variant):
    from PIL import Image

    if variant == "exif_thumbnail":  # an EXIF block holding its own little JPEG
        buffer = io.BytesIO()
        thumb = io.BytesIO()
        Image.fromarray(bad_file_cases.photo(16, 12)).save(thumb, format="JPEG")
        exif = Image.Exif()
        exif[0x0112] = 1
        Image.fromarray(bad_file_cases.photo()).save(buffer, format="JPEG", exif=exif.tobytes() + thumb.getvalue())
        data_ = buffer.getvalue()
    else:
        params = {"progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "restart_intervals": [cv2.IMWRITE_JPEG_RST_INTERVAL, 1],
                  "progressive_restarts": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 2],
                  "optimized": [cv2.IMWRITE_JPEG_OPTIMIZE, 1]}.get(variant, [])
        data_ = _jpeg(params)
        if variant == "trailer":  # some phones append their own data after the image
            data_ += b"SEFHxxxx" * 500
        elif variant == "two_images":  # MPO-style: a second JPEG after the first
            data_ += _jpeg(image=bad_file_cases.photo(30, 20))
        elif variant == "padded":
            data_ += b"\x00" * 100
    problem, size, truncated = images.jpeg_structure(data_)
    assert problem is None and size == (90, 120) and not truncated
    assert images.decode_bytes(data_, 2).shape == (60, 45, 3)


def _damaged(kind: str) -> bytes:
    raw = bytearray(_jpeg())
    start = bad_file_cases.scan_start(bytes(raw))
    if kind == "restart_without_interval":
        raw[start + 40:start + 44] = b"\xff\xd0\xff\xd1"
    elif kind == "restarts_out_of_order":
        raw = bytearray(_jpeg([cv2.IMWRITE_JPEG_RST_INTERVAL, 1]))
        first = raw.index(b"\xff\xd0", bad_file_cases.scan_start(bytes(raw)))
        raw[first + 1] = 0xD3
    elif kind == "stray_marker":
        raw[start + 40:start + 42] = b"\xff\x42"
    elif kind == "segment_past_end":
        at = raw.index(b"\xff\xdb")
        raw[at + 2:at + 4] = (60000).to_bytes(2, "big")
    elif kind == "no_frame_header":
        at = raw.index(b"\xff\xc0")
        raw[at + 1] = 0xE5  # the frame header becomes an APP5 segment
    elif kind == "end_marker_inside_data":  # data after an early end-of-image marker is the rest of the scan
        raw[start + 40:start + 42] = b"\xff\xd9"
    elif kind == "garbage_between_segments":
        at = raw.index(b"\xff\xc4")
        raw[at:at] = b"\x13\x37"
    return bytes(raw)


@pytest.mark.parametrize("kind", ["restart_without_interval", "restarts_out_of_order", "stray_marker",
                                  "segment_past_end", "no_frame_header", "end_marker_inside_data",
                                  "garbage_between_segments"])
def test_structurally_damaged_jpeg_is_refused(kind):
    damaged = _damaged(kind)
    with pytest.raises(images.UnreadableImage, match=r"bad\.jpg: (corrupt|truncated) JPEG \(.+\); copy or export"):
        images.decode_bytes(damaged, 2, "bad.jpg")


def test_damage_the_decoder_alone_would_let_through():
    """Without the structure check libjpeg returns an image for these (a silent wrong label downstream)."""
    for kind in ("restart_without_interval", "stray_marker", "end_marker_inside_data"):
        assert cv2.imdecode(np.frombuffer(_damaged(kind), np.uint8), cv2.IMREAD_REDUCED_COLOR_2) is not None, kind


# -- property: damaged bytes are decoded or refused, never a crash ------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(["jpg", "progressive", "png"]), edits=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_damaged_bytes_are_either_decoded_or_refused_never_a_crash(base, edits, cut):
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if base == "progressive" else []
    ok, encoded = cv2.imencode(".png" if base == "png" else ".jpg", bad_file_cases.photo(32, 24, seed=1), params)
    raw = bytearray(encoded.tobytes())
    for where, replacement in edits:
        at = int(where * len(raw))
        raw[at:at + len(replacement)] = replacement
    if cut is not None:
        raw = raw[: int(cut * len(raw))]
    try:
        decoded = images.decode_bytes(bytes(raw), 2, "fuzzed")
    except images.UnreadableImage as error:
        assert str(error).startswith("fuzzed: ")
    else:
        assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
