"""Issue #6: whatever users point camp at or send the served model, nothing crashes midway or is lost.

Every awkward file comes from `tests/fixtures/bad_files.py` (written at test time). Each is checked
where it is decoded, then through `camp data summary` and `camp train` on a dataset holding all of
them, then through the served model; configs, label maps and manifests are refused before anything
runs; caches are rebuilt when damaged; a sweep killed with SIGKILL resumes without losing a trial.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camp import data, images, preprocess
from camp.cli import main
from camp.data import Item
from camp.preprocess import PreprocessConfig
from tests.conftest import run_concurrently
from tests.fixtures import bad_files
from tests.fixtures.bad_files import CASES, READ, SKIPPED
from tests.synthetic import make_image_folder
from tests.test_preprocess import knobs as preprocess_knobs

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "sweeps" / "smoke.yaml")
LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]


def deny_reading(monkeypatch, filename: str = CASES["no_permission"].filename) -> None:
    """Make `filename` unreadable the way chmod 000 does for a normal user (root ignores file modes)."""
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == filename:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


@pytest.fixture()
def no_memory_cache(monkeypatch):
    """Decoded images (the 8000x8000 one is 48 MB at 1/2) are dropped from memory after the test."""
    monkeypatch.setattr(images, "_MEMORY", {})


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> dict[str, Path]:
    return bad_files.write(tmp_path_factory.mktemp("bad_files"))


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
    original = bad_files.photo(120, 90, seed=7)
    assert decoded.shape == original.shape
    assert np.abs(decoded.astype(int) - original.astype(int)).mean() < 6


def test_16_bit_and_gray_images_match_their_8_bit_colour_selves(case_files):
    assert np.abs(images.decode_path(case_files["png_16bit"], 1).astype(int)
                  - bad_files.photo(seed=4).astype(int)).max() <= 1
    gray = images.decode_path(case_files["gray_jpeg"], 1)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_oversized_image_is_refused_before_decoding(case_files, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("the decoder ran on an image over MAX_PIXELS")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    with pytest.raises(images.UnreadableImage, match=r"10000x10000 is 100 megapixels.*MAX_PIXELS"):
        images.decode_path(case_files["over_limit"])
    assert bad_files.HUGE_SIDE ** 2 <= images.MAX_PIXELS  # 8000x8000 is under the limit: read


def test_pixel_limit_also_holds_without_a_header_size_and_for_arrays(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    ok, bmp = cv2.imencode(".bmp", np.zeros((40, 30, 3), np.uint8))  # BMP: size only known after decoding
    with pytest.raises(images.UnreadableImage, match="40 is 0 megapixels|30x40"):
        images.decode_bytes(bmp.tobytes(), 1, "big.bmp")
    with pytest.raises(images.UnreadableImage, match="item 2: 30x40"):
        images.from_array(np.zeros((40, 30, 3), np.uint8), 1, "item 2")
    assert images.decode_bytes(cv2.imencode(".bmp", np.zeros((20, 30, 3), np.uint8))[1].tobytes(), 1).shape == (20, 30, 3)


def test_chmod_000_file_is_skipped(tmp_path):
    path = bad_files.write(tmp_path, ["no_permission"])["no_permission"]
    if not bad_files.permission_is_enforced(tmp_path):
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
    image = bad_files.photo(seed=11) if image is None else image
    ok, encoded = cv2.imencode(".jpg", image, list(params))
    return encoded.tobytes()


@pytest.mark.parametrize("variant", ["baseline", "progressive", "restart_intervals", "progressive_restarts",
                                     "optimized", "exif_thumbnail", "trailer", "two_images", "padded"])
def test_valid_jpeg_variants_pass_the_structure_check(variant):
    from PIL import Image

    if variant == "exif_thumbnail":  # an EXIF block holding its own little JPEG
        buffer = io.BytesIO()
        thumb = io.BytesIO()
        Image.fromarray(bad_files.photo(16, 12)).save(thumb, format="JPEG")
        exif = Image.Exif()
        exif[0x0112] = 1
        Image.fromarray(bad_files.photo()).save(buffer, format="JPEG", exif=exif.tobytes() + thumb.getvalue())
        data_ = buffer.getvalue()
    else:
        params = {"progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "restart_intervals": [cv2.IMWRITE_JPEG_RST_INTERVAL, 1],
                  "progressive_restarts": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 2],
                  "optimized": [cv2.IMWRITE_JPEG_OPTIMIZE, 1]}.get(variant, [])
        data_ = _jpeg(params)
        if variant == "trailer":  # some phones append their own data after the image
            data_ += b"SEFHxxxx" * 500
        elif variant == "two_images":  # MPO-style: a second JPEG after the first
            data_ += _jpeg(image=bad_files.photo(30, 20))
        elif variant == "padded":
            data_ += b"\x00" * 100
    problem, size, truncated = images.jpeg_structure(data_)
    assert problem is None and size == (90, 120) and not truncated
    assert images.decode_bytes(data_, 2).shape == (60, 45, 3)


def _damaged(kind: str) -> bytes:
    raw = bytearray(_jpeg())
    start = bad_files.scan_start(bytes(raw))
    if kind == "restart_without_interval":
        raw[start + 40:start + 44] = b"\xff\xd0\xff\xd1"
    elif kind == "restarts_out_of_order":
        raw = bytearray(_jpeg([cv2.IMWRITE_JPEG_RST_INTERVAL, 1]))
        first = raw.index(b"\xff\xd0", bad_files.scan_start(bytes(raw)))
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


# -- non-ASCII and non-UTF-8 names, empty class folders --------------------------------------------------

def test_non_ascii_and_non_utf8_file_names(tmp_path, isolated, no_memory_cache, capsys):
    root = make_image_folder(tmp_path / "d", per_class={"train": 3, "validation": 2}, size=(40, 30))
    good = (root / "train" / "hat" / "hat_000.jpg").read_bytes()
    hat = os.fsencode(root / "train" / "hat")
    (root / "train" / "hat" / CASES["non_ascii_name"].filename).write_bytes(good)
    with open(os.path.join(hat, b"caf\xe9 latin-1.jpg"), "wb") as handle:  # not valid UTF-8
        handle.write(good)
    with open(os.path.join(hat, b"vide \xe9.jpg"), "wb") as handle:  # not UTF-8 and unreadable
        handle.write(b"")
    dataset = data.load_dataset(root)
    assert len(dataset.split("train")) == 15 + 3
    data.fingerprint(dataset.items)  # hashes names that are not UTF-8
    summary = json.loads(_summary(capsys, root, isolated))
    assert summary["splits"]["train"]["cap_and_hat"] == 5
    assert list(summary["skipped"]["files"]) == ["train/hat/vide \udce9.jpg"]
    # the table, in a real process (its stderr escapes what it cannot encode)
    table = subprocess.run([sys.executable, "-m", "camp.cli", "data", "summary", "--data", str(root), "--out",
                            str(isolated / "r2")], cwd=isolated, capture_output=True, timeout=300)
    assert table.returncode == 0, table.stderr[-2000:]
    assert b"vide \\udce9.jpg: empty file" in table.stderr


def _summary(capsys, root, isolated, *extra) -> str:
    capsys.readouterr()
    assert main(["data", "summary", "--json", "--data", str(root), "--out", str(isolated / "report"), *extra]) == 0
    return capsys.readouterr().out


def test_empty_class_folder_counts_zero(tmp_path, isolated, no_memory_cache, capsys):
    root = make_image_folder(tmp_path / "d", per_class={"train": 4, "validation": 2}, size=(40, 30))
    for file in (root / "train" / "shoes").iterdir():
        file.unlink()
    (root / "validation" / "socks").mkdir()  # unknown to the label map, but empty: nothing to refuse
    summary = json.loads(_summary(capsys, root, isolated))
    assert summary["splits"]["train"]["shoes"] == 0 and summary["splits"]["validation"]["shoes"] == 2
    assert main(["data", "summary", "--data", str(root), "--out", str(isolated / "r2")]) == 0
    shoes = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("shoes"))
    assert shoes.split() == ["shoes", "0", "2"]


# -- the same handling through the commands --------------------------------------------------------------

@pytest.fixture()
def planted(isolated, synthetic_data, monkeypatch, no_memory_cache):
    """A copy of the synthetic dataset holding every bad file (train/hat/), a train image copied into
    test/, and an empty test/shoes/ folder; unreadable permissions simulated when running as root."""
    root = isolated / "planted"
    shutil.copytree(synthetic_data, root)
    where = bad_files.plant(root)
    if not bad_files.permission_is_enforced(isolated):
        deny_reading(monkeypatch)
    return root, where


def test_data_summary_uses_the_readable_and_lists_the_rest(planted, isolated, capsys):
    root, where = planted
    summary = json.loads(_summary(capsys, root, isolated))
    assert summary["splits"]["train"]["cap_and_hat"] == 16 + len(READ)  # every readable oddity counts
    assert summary["splits"]["test"]["shoes"] == 0  # the empty class folder
    assert summary["splits"]["test"]["bottoms"] == 7
    assert summary["skipped"]["count"] == len(SKIPPED)
    assert sorted(summary["skipped"]["files"]) == where.skipped
    for name in SKIPPED:
        relpath = where.files[name]
        assert CASES[name].reason in summary["skipped"]["files"][relpath], name
    assert summary["skipped"]["by_split"] == {"train": {"cap_and_hat": len(SKIPPED)}}
    leak = sorted(f"{relpath.split('/')[0]}:{relpath}" for relpath in where.duplicate)
    assert summary["duplicates_across_splits"] == [leak]
    # the table run says the same on stderr
    assert main(["data", "summary", "--data", str(root), "--out", str(isolated / "r2")]) == 0
    err = capsys.readouterr().err
    assert f"skipped {len(SKIPPED)} unreadable file(s)" in err and "leakage" in err
    for name in SKIPPED:
        assert CASES[name].filename in err


TINY_TRAIN = """study: {name: hardening}
seed: 3
preprocess: {mode: gray, size: 24, scale: 0.25, crop_method: none}
model: {conv_blocks: 1, filters: 8, dense_units: 8, batch_size: 32, max_epochs: 1, patience: 1, augmentation: false}
"""


def test_camp_train_skips_and_logs_the_unreadable(planted, isolated, capsys):
    import mlflow
    from mlflow import MlflowClient

    root, where = planted
    config = isolated / "tiny.yaml"
    config.write_text(TINY_TRAIN)
    capsys.readouterr()
    assert main(["train", str(config), "--data", str(root)]) == 0
    captured = capsys.readouterr()
    run_id = json.loads(captured.out.strip().splitlines()[-1])["run_id"]
    assert f"skipped {len(SKIPPED)} unreadable image(s)" in captured.err
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["camp.skipped_images"] == str(len(SKIPPED))
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/skipped_images.json")
    assert sorted(logged) == where.skipped
    for name in SKIPPED:
        assert CASES[name].reason in logged[where.files[name]]


# -- manifests, label maps and study files: refused before anything runs --------------------------------

def test_manifest_label_unknown_to_the_label_map_names_the_line(tmp_path, isolated, capsys):
    manifest, line = bad_files.manifest_with_unknown_label(tmp_path / "m")
    with pytest.raises(ValueError) as error:
        data.load_dataset(manifest)
    message = str(error.value)
    assert f"{manifest}: line {line} (img2.jpg): label 'socks' is not in label map 'camp5'" in message
    assert "known: " in message and "maps or drops it" in message
    assert main(["data", "summary", "--data", str(manifest), "--out", str(isolated / "r")]) == 2
    assert f"line {line}" in capsys.readouterr().err


def test_manifest_from_a_spreadsheet_and_in_another_encoding(tmp_path):
    manifest, _ = bad_files.manifest_with_unknown_label(tmp_path / "m")
    rows = manifest.read_text(encoding="utf-8").replace("socks", "hat")
    manifest.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))  # Excel's byte-order mark before `path`
    assert len(data.load_dataset(manifest).items) == 4
    manifest.write_bytes(rows.replace("img0.jpg", "caf\u00e9.jpg").encode("latin-1"))
    with pytest.raises(ValueError, match=r"m/manifest.csv: not UTF-8 text .*save the CSV as UTF-8"):
        data.load_dataset(manifest)


@pytest.mark.parametrize("text, pattern", [
    ("labels: [a, b\nmap: {x: a}\n", r"bad.yaml: YAML syntax error at line 2, column"),
    ("- a\n- b\n", "a label map is a mapping"),
    ("labels: tops\n", "`labels` must be a list of names"),
    ("labels: [a, a]\n", "lists a label twice"),
    ("labels: [a]\nmap: [x, a]\n", "`map` must be a mapping"),
    ("labels: [a]\ndrop: dress\n", "`drop` must be a mapping"),
])
def test_label_map_file_mistakes_are_named(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        data.load_label_map(str(path))


@pytest.mark.parametrize("knobs, where, allowed", [
    ("preprocess: {mode: rgb}", "preprocess.mode='rgb'", "('binary', 'gray', 'color')"),
    ("preprocess: {crop_method: {choice: [recipe, magic]}}", "preprocess.crop_method='magic'", "('recipe', 'none'"),
    ("preprocess: {threshold_block: {int: [3, 9]}}", "preprocess.threshold_block=4", "odd and >= 3"),
    ("preprocess: {median_blur: 4}", "preprocess.median_blur=4", "0 (off) or odd"),
    ("model: {kernel_size: {choice: [3, 4]}}", "model.kernel_size=4", "3, 5 or 7"),
    ("preprocess: {crop_top: 0.5, crop_bottom: 0.5}", "preprocess", "must leave some image"),
    ("preprocess: {size: {int: [4, 64]}}", "preprocess.size=4", "[8, 256]"),
    ("model: {optimizer: lion}", "model.optimizer='lion'", "('adam', 'adamw', 'sgd', 'rmsprop')"),
    ("preprocess: {sizes: 24}", "unknown preprocess knob(s) sizes", "known: crop_top"),
    ("model: {dropout: {float: [0.5, 0.1]}}", "model.dropout", "empty range"),
    ("model: {filters: sixteen}", "model.filters='sixteen'", "expected int"),
])
def test_study_file_mistakes_name_the_key_and_the_allowed_values(isolated, synthetic_data, capsys, knobs, where,
                                                                 allowed):
    study = isolated / "study.yaml"
    study.write_text(f"study: {{name: s}}\n{knobs}\n")
    journal = isolated / "optuna.journal"
    assert main(["sweep", str(study), "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    err = capsys.readouterr().err
    assert str(study) in err and where in err and allowed in err, err
    assert not journal.exists()  # refused before the study (let alone a trial) exists


@pytest.mark.parametrize("space", [
    # each value is fine with the others' first choice; the largest two together cut the whole image
    "crop_top: {choice: [0.3, 0.6, 0.1]}\n  crop_bottom: {choice: [0.3, 0.1, 0.6]}",
    # the `else` value of one range with the other range's high end
    "crop_top: {float: [0.1, 0.4]}\n  crop_bottom: {float: [0.1, 0.3], when: {mode: gray}, else: 0.6}",
])
def test_a_space_that_can_sample_an_invalid_combination_is_rejected(isolated, synthetic_data, capsys, space):
    study = isolated / "combo.yaml"
    study.write_text(f"study: {{name: combo}}\npreprocess:\n  {space}\n")
    journal = isolated / "optuna.journal"
    assert main(["sweep", str(study), "--data", str(synthetic_data), "--storage", str(journal)]) == 2
    err = capsys.readouterr().err
    assert "all knobs at their high ends" in err and "crop_top + crop_bottom must leave some image" in err
    assert not journal.exists()


def test_yaml_syntax_error_in_a_study_file_shows_the_line_through_the_cli(isolated, capsys):
    study = isolated / "broken.yaml"
    study.write_text("study:\n  name: broken\nmodel: {filters: 8\n")
    assert main(["sweep", str(study)]) == 2
    assert "YAML syntax error at line" in capsys.readouterr().err


# -- the served model --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny untrained model saved as camp's bundle (what the registered pyfunc wraps)."""
    from camp.model import ModelConfig, build_model
    from camp.train import RunConfig, configure_tensorflow, save_model_bundle

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
    probabilities = frame[[f"p_{label}" for label in LABELS]].to_numpy()
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


# -- caches --------------------------------------------------------------------------------------------------

def test_concurrent_array_cache_writes_do_not_collide(isolated):
    """Sweep workers may write the same preprocessed-array entry at once (one temporary name per writer)."""
    path = images.cache_dir() / "arrays" / "same.npz"
    x = np.random.default_rng(0).integers(0, 255, (200, 24, 24, 1), dtype=np.uint8)
    assert run_concurrently(lambda: preprocess._write_arrays(path, x, {})) == []
    items = [Item(f"/{i}.jpg", f"{i}.jpg", "hat", 0, "train") for i in range(200)]
    cached, skipped = preprocess._read_arrays(path, items, PreprocessConfig(mode="gray", size=24))
    assert np.array_equal(cached, x) and skipped == {}
    assert [p.name for p in path.parent.iterdir()] == ["same.npz"]


def test_an_unwritable_array_cache_costs_only_the_cache(isolated, synthetic_data, monkeypatch, no_memory_cache,
                                                        capsys):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    items = data.load_dataset(synthetic_data).split("test")[:6]
    monkeypatch.setattr(preprocess.np, "savez", disk_full)
    arrays = preprocess.load_arrays(items, f"full-{uuid.uuid4().hex[:6]}", PreprocessConfig(size=16), progress=False)
    assert arrays.x.shape == (6, 16, 16, 1) and not arrays.cache_hit
    assert "could not write the array cache" in capsys.readouterr().err
    assert not list((images.cache_dir() / "arrays").glob("*tmp*"))


# -- property tests: random images in every encoding, random valid knobs -----------------------------------

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
    decoded = images.decode_bytes(raw, reduction)
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    assert abs(decoded.shape[0] - height / reduction) <= 1 and abs(decoded.shape[1] - width / reduction) <= 1
    config = PreprocessConfig(**{**data_.draw(preprocess_knobs()), "decode_reduction": reduction})
    output = preprocess.preprocess_image(decoded, config)
    assert output.shape == config.input_shape and output.dtype == np.uint8


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(["jpg", "progressive", "png"]), edits=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_damaged_bytes_are_either_decoded_or_refused_never_a_crash(base, edits, cut):
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if base == "progressive" else []
    ok, encoded = cv2.imencode(".png" if base == "png" else ".jpg", bad_files.photo(32, 24, seed=1), params)
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


# -- disk: a sweep killed with SIGKILL resumes, losing no finished trial -----------------------------------

def _journal_trials(journal: Path, name: str = "smoke"):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return []


def _sweep_command(root: Path, journal: Path) -> list[str]:
    return [sys.executable, "-m", "camp.cli", "sweep", SMOKE, "--data", str(root), "--storage", str(journal)]


def _finished(trials) -> dict[int, tuple]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return {t.number: (t.state, t.value, t.params, t.user_attrs.get("mlflow_run_id")) for t in trials if t.state in done}


def _sweep_env() -> dict:
    return {**os.environ, "CAMP_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def _run(command, isolated, timeout=420) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=isolated, env=_sweep_env(), capture_output=True, text=True, timeout=timeout)


def _check_resumed(isolated, journal, before: dict, result) -> None:
    import mlflow
    from mlflow import MlflowClient

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = _journal_trials(journal)
    finished = _finished(after)
    assert len(finished) >= 3  # smoke.yaml's n_trials
    for number, record in before.items():
        assert finished[number] == record, f"finished trial {number} changed after the kill"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    champion = MlflowClient().get_model_version_by_alias("camp-classifier", "champion")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    best = optuna.load_study(study_name="smoke", storage=storage).best_trial
    assert champion.tags["camp.run_id"] == best.user_attrs["mlflow_run_id"]


@pytest.fixture()
def sweep_data(isolated, synthetic_data, no_memory_cache):
    root = isolated / "data"
    shutil.copytree(synthetic_data, root)
    where = bad_files.plant(root, names=["zero_byte", "text_as_jpg", "png_alpha", "non_ascii_name"])
    return root, where


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_without_losing_a_finished_trial(isolated, sweep_data):
    import mlflow

    root, where = sweep_data
    journal = isolated / "optuna.journal"
    process = subprocess.Popen(_sweep_command(root, journal), cwd=isolated, env=_sweep_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed_during = time.time() + 300, None
    try:
        while time.time() < deadline and process.poll() is None:
            trials = _journal_trials(journal) if journal.exists() else []
            if _finished(trials) and any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
                os.kill(process.pid, signal.SIGKILL)  # mid-trial: one finished, the next one running
                killed_during = max(t.number for t in trials)
                break
            time.sleep(0.3)
    finally:
        if process.poll() is None and killed_during is None:
            process.kill()
        process.wait(timeout=60)
    assert killed_during is not None, "the sweep never had a finished and a running trial at once"
    before = _finished(_journal_trials(journal))
    assert before
    # the next run starts on the same stores, resumes the study, and loses nothing
    _check_resumed(isolated, journal, before, _run(_sweep_command(root, journal), isolated))
    # trials that ran log the unreadable files they skipped, like `camp train`
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run_id = next(iter(before.values()))[3]
    assert sorted(mlflow.artifacts.load_dict(f"runs:/{run_id}/skipped_images.json")) == where.skipped


DIE_WHILE_LOGGING_THE_MODEL = """
import os, signal, sys
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

real = LocalArtifactRepository.log_artifacts

def log_artifacts(self, local_dir, artifact_path=None):
    if os.path.exists(os.path.join(local_dir, "MLmodel")):  # the registered model's files: half, then SIGKILL
        names = sorted(os.listdir(local_dir))
        for name in names[: len(names) // 2]:
            path = os.path.join(local_dir, name)
            if os.path.isfile(path):
                self.log_artifact(path, artifact_path)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, local_dir, artifact_path)

LocalArtifactRepository.log_artifacts = log_artifacts
from camp.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sweep_killed_while_logging_the_model_resumes_and_registers(isolated, sweep_data):
    root, _ = sweep_data
    journal = isolated / "optuna.journal"
    dying = _run([sys.executable, "-c", DIE_WHILE_LOGGING_THE_MODEL, *_sweep_command(root, journal)[3:]], isolated)
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-3000:]
    before = _finished(_journal_trials(journal))
    assert len(before) == 3  # every trial finished; the kill came while registering the best one
    _check_resumed(isolated, journal, before, _run(_sweep_command(root, journal), isolated))
