"""camp.images: decoding any input to upright 8-bit BGR, unreadable files named, the checksummed decode cache."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from camp import images
from camp.data import Item
from tests.conftest import run_concurrently

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


# -- the decode cache ----------------------------------------------------------------------------------

@pytest.fixture()
def cached_items(synthetic_data, isolated, tmp_path, monkeypatch):
    """Twelve synthetic items plus one unreadable one, a unique fingerprint, and a fresh memory cache."""
    from camp.data import load_dataset

    monkeypatch.setattr(images, "_MEMORY", {})
    items = load_dataset(synthetic_data).split("validation")[:12]
    broken = tmp_path / "broken.jpg"
    broken.write_text("nope")
    items.append(Item(str(broken), "broken.jpg", "hat", 0, "validation"))
    return items, f"test-{uuid.uuid4().hex[:8]}"


def cache_files(fingerprint: str, reduction: int = 2) -> tuple[Path, Path]:
    directory = images.cache_dir() / "decoded"
    key = f"decoded-{fingerprint}-r{reduction}"
    return directory / f"{key}.npy", directory / f"{key}.json"


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(images, "decode_items", fail)


def count_decoding(monkeypatch) -> list:
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return REAL_DECODE_ITEMS(*args, **kwargs)

    monkeypatch.setattr(images, "decode_items", counting)
    return calls


def test_cache_dir_follows_camp_cache(isolated):
    assert images.cache_dir() == isolated / "cache"


def test_load_decoded_second_call_reads_the_disk_cache(cached_items, monkeypatch):
    items, fingerprint = cached_items
    calls = count_decoding(monkeypatch)
    decoded, skipped = images.load_decoded(items, fingerprint, 2, progress=False)
    assert len(calls) == 1
    assert all(image.shape == (60, 45, 3) for image in decoded[:-1]) and decoded[-1] is None
    assert list(skipped) == ["broken.jpg"]
    data_file, index_file = cache_files(fingerprint)
    assert data_file.is_file() and index_file.is_file()
    assert not list(data_file.parent.glob("*tmp*"))  # temporaries renamed into place
    # same process: the memory cache answers
    assert images.load_decoded(items, fingerprint, 2, progress=False)[0] is decoded
    # a new process (memory cleared): the disk cache answers, identical arrays
    monkeypatch.setattr(images, "_MEMORY", {})
    forbid_decoding(monkeypatch)
    again, skipped_again = images.load_decoded(items, fingerprint, 2, progress=False)
    assert skipped_again == skipped
    assert [a is None for a in again] == [a is None for a in decoded]
    assert all(np.array_equal(a, b) for a, b in zip(again[:-1], decoded[:-1]))
    # another reduction is another cache entry
    monkeypatch.setattr(images, "_MEMORY", {})
    calls = count_decoding(monkeypatch)
    assert images.load_decoded(items, fingerprint, 4, progress=False)[0][0].shape == (30, 23, 3)
    assert len(calls) == 1


def corrupt_npy_payload(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for offset in range(len(raw) - 200, len(raw) - 100):
        raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["payload", "truncated", "header", "index-json", "index-shapes", "index-list",
                                    "missing-index"])
def test_corrupt_decode_cache_is_rebuilt_not_trusted(cached_items, monkeypatch, damage):
    items, fingerprint = cached_items
    decoded, skipped = images.load_decoded(items, fingerprint, 2, progress=False)
    data_file, index_file = cache_files(fingerprint)
    if damage == "payload":
        corrupt_npy_payload(data_file)
    elif damage == "truncated":
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    elif damage == "header":
        data_file.write_bytes(b"garbage" + data_file.read_bytes()[7:])
    elif damage == "index-json":
        index_file.write_text(index_file.read_text()[:-5])
    elif damage == "index-shapes":  # the payload is intact, the shapes describing it are not
        index = json.loads(index_file.read_text())
        index["shapes"][0] = [index["shapes"][0][0] + 1, *index["shapes"][0][1:]]
        index_file.write_text(json.dumps(index))
    elif damage == "index-list":
        index_file.write_text("[1, 2, 3]")
    else:
        index_file.unlink()
    monkeypatch.setattr(images, "_MEMORY", {})
    calls = count_decoding(monkeypatch)
    rebuilt, skipped_again = images.load_decoded(items, fingerprint, 2, progress=False)
    assert len(calls) == 1, "a damaged cache must be decoded again"
    assert skipped_again == skipped
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt[:-1], decoded[:-1]))
    # and the rebuilt cache is whole again
    monkeypatch.setattr(images, "_MEMORY", {})
    forbid_decoding(monkeypatch)
    assert all(np.array_equal(a, b) for a, b in zip(images.load_decoded(items, fingerprint, 2, False)[0][:-1],
                                                   decoded[:-1]))


def test_cache_for_a_different_item_count_is_not_used(cached_items, monkeypatch):
    items, fingerprint = cached_items
    images.load_decoded(items, fingerprint, 2, progress=False)
    monkeypatch.setattr(images, "_MEMORY", {})
    calls = count_decoding(monkeypatch)
    assert len(images.load_decoded(items[:5], fingerprint, 2, progress=False)[0]) == 5
    assert len(calls) == 1


def test_concurrent_cache_writes_do_not_collide(isolated):
    """Sweep workers are separate processes that may write the same cache entry at once."""
    directory = images.cache_dir() / "decoded"
    data_file, index_file = directory / "decoded-same-r2.npy", directory / "decoded-same-r2.json"
    arrays = [np.full((50, 40, 3), value, np.uint8) for value in range(30)]
    assert run_concurrently(lambda: images._write_decoded(data_file, index_file, arrays, {})) == []
    loaded = images._read_decoded(data_file, index_file, len(arrays))
    assert loaded is not None and all(np.array_equal(a, b) for a, b in zip(loaded[0], arrays))
    assert sorted(p.name for p in directory.iterdir()) == ["decoded-same-r2.json", "decoded-same-r2.npy"]
