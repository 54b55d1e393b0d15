"""camp.caches: the decoded-image cache and the preprocessed-array cache are read back when intact, rebuilt
when damaged or not matching, shared safely by concurrent writers, and a full or unwritable disk costs only
the cache."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from camp import caches, images, preprocess
from camp.data import Item, load_dataset
from camp.preprocess import PreprocessConfig
from tests.conftest import run_concurrently

REAL_DECODE_ITEMS = images.decode_items


# -- the decode cache ----------------------------------------------------------------------------------

@pytest.fixture()
def cached_items(synthetic_data, isolated, tmp_path, monkeypatch):
    """Twelve synthetic items plus one unreadable one, a unique fingerprint, and a fresh memory cache."""
    from camp.data import load_dataset

    monkeypatch.setattr(caches, "_MEMORY", {})
    items = load_dataset(synthetic_data).split("validation")[:12]
    broken = tmp_path / "broken.jpg"
    broken.write_text("nope")
    items.append(Item(str(broken), "broken.jpg", "hat", 0, "validation"))
    return items, f"test-{uuid.uuid4().hex[:8]}"


def cache_files(fingerprint: str, reduction: int = 2) -> tuple[Path, Path]:
    directory = caches.cache_dir() / "decoded"
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
    assert caches.cache_dir() == isolated / "cache"


def test_load_decoded_second_call_reads_the_disk_cache(cached_items, monkeypatch):
    items, fingerprint = cached_items
    calls = count_decoding(monkeypatch)
    decoded, skipped = caches.load_decoded(items, fingerprint, 2, progress=False)
    assert len(calls) == 1
    assert all(image.shape == (60, 45, 3) for image in decoded[:-1]) and decoded[-1] is None
    assert list(skipped) == ["broken.jpg"]
    data_file, index_file = cache_files(fingerprint)
    assert data_file.is_file() and index_file.is_file()
    assert not list(data_file.parent.glob("*tmp*"))  # temporaries renamed into place
    # same process: the memory cache answers
    assert caches.load_decoded(items, fingerprint, 2, progress=False)[0] is decoded
    # a new process (memory cleared): the disk cache answers, identical arrays
    monkeypatch.setattr(caches, "_MEMORY", {})
    forbid_decoding(monkeypatch)
    again, skipped_again = caches.load_decoded(items, fingerprint, 2, progress=False)
    assert skipped_again == skipped
    assert [a is None for a in again] == [a is None for a in decoded]
    assert all(np.array_equal(a, b) for a, b in zip(again[:-1], decoded[:-1]))
    # another reduction is another cache entry
    monkeypatch.setattr(caches, "_MEMORY", {})
    calls = count_decoding(monkeypatch)
    assert caches.load_decoded(items, fingerprint, 4, progress=False)[0][0].shape == (30, 23, 3)
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
    decoded, skipped = caches.load_decoded(items, fingerprint, 2, progress=False)
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
    monkeypatch.setattr(caches, "_MEMORY", {})
    calls = count_decoding(monkeypatch)
    rebuilt, skipped_again = caches.load_decoded(items, fingerprint, 2, progress=False)
    assert len(calls) == 1, "a damaged cache must be decoded again"
    assert skipped_again == skipped
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt[:-1], decoded[:-1]))
    # and the rebuilt cache is whole again
    monkeypatch.setattr(caches, "_MEMORY", {})
    forbid_decoding(monkeypatch)
    assert all(np.array_equal(a, b) for a, b in zip(caches.load_decoded(items, fingerprint, 2, False)[0][:-1],
                                                   decoded[:-1]))


def test_cache_for_a_different_item_count_is_not_used(cached_items, monkeypatch):
    items, fingerprint = cached_items
    caches.load_decoded(items, fingerprint, 2, progress=False)
    monkeypatch.setattr(caches, "_MEMORY", {})
    calls = count_decoding(monkeypatch)
    assert len(caches.load_decoded(items[:5], fingerprint, 2, progress=False)[0]) == 5
    assert len(calls) == 1


def test_concurrent_cache_writes_do_not_collide(isolated):
    """Sweep workers are separate processes that may write the same cache entry at once."""
    directory = caches.cache_dir() / "decoded"
    data_file, index_file = directory / "decoded-same-r2.npy", directory / "decoded-same-r2.json"
    arrays = [np.full((50, 40, 3), value, np.uint8) for value in range(30)]
    assert run_concurrently(lambda: caches._write_decoded(data_file, index_file, arrays, {})) == []
    loaded = caches._read_decoded(data_file, index_file, len(arrays))
    assert loaded is not None and all(np.array_equal(a, b) for a, b in zip(loaded[0], arrays))
    assert sorted(p.name for p in directory.iterdir()) == ["decoded-same-r2.json", "decoded-same-r2.npy"]


# -- the array cache -----------------------------------------------------------------------------------

@pytest.fixture()
def cache_items(synthetic_data, isolated, tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "_MEMORY", {})
    items = load_dataset(synthetic_data).split("test")[:10]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    items.insert(3, Item(str(broken), "broken.jpg", "hat", 0, "test"))
    return items, f"test-{uuid.uuid4().hex[:8]}"


def count_preprocessing(monkeypatch) -> list:
    calls, real = [], preprocess.preprocess_batch

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocess, "preprocess_batch", counting)
    return calls


def test_load_arrays_hits_the_cache_for_the_same_config_only(cache_items, monkeypatch):
    items, fingerprint = cache_items
    calls = count_preprocessing(monkeypatch)
    config = PreprocessConfig(mode="gray", size=16)
    first = caches.load_arrays(items, fingerprint, config, progress=False)
    assert not first.cache_hit and len(calls) == 1
    assert first.x.shape == (10, 16, 16, 1) and first.x.dtype == np.uint8
    assert [item.relpath for item in first.items] == [item.relpath for item in items if item.relpath != "broken.jpg"]
    assert list(first.skipped) == ["broken.jpg"]
    assert (caches.cache_dir() / "arrays" / f"{first.key}.npz").is_file()
    second = caches.load_arrays(items, fingerprint, config, progress=False)
    assert second.cache_hit and len(calls) == 1 and second.key == first.key
    assert np.array_equal(second.x, first.x)
    other = caches.load_arrays(items, fingerprint, dataclasses.replace(config, size=24), progress=False)
    assert not other.cache_hit and len(calls) == 2 and other.x.shape == (10, 24, 24, 1)
    assert other.key != first.key


def damage_middle(path):
    raw = bytearray(path.read_bytes())
    for offset in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["middle", "truncated", "wrong-checksum", "wrong-shape"])
def test_corrupt_arrays_cache_is_rebuilt(cache_items, monkeypatch, damage):
    items, fingerprint = cache_items
    config = PreprocessConfig(mode="gray", size=16)
    first = caches.load_arrays(items, fingerprint, config, progress=False)
    path = caches.cache_dir() / "arrays" / f"{first.key}.npz"
    if damage == "middle":
        damage_middle(path)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "wrong-checksum":  # a well-formed archive whose payload does not match its checksum
        x = first.x.copy()
        x[0, 0, 0, 0] ^= 1
        np.savez(path, x=x, checksum=np.array(caches.checksum(first.x)))
    else:  # intact, but for another number of items
        np.savez(path, x=first.x[:4], checksum=np.array(caches.checksum(first.x[:4])))
    calls = count_preprocessing(monkeypatch)
    rebuilt = caches.load_arrays(items, fingerprint, config, progress=False)
    assert not rebuilt.cache_hit and len(calls) == 1
    assert np.array_equal(rebuilt.x, first.x)
    assert caches.load_arrays(items, fingerprint, config, progress=False).cache_hit


def test_a_config_cache_hit_decodes_nothing(isolated, synthetic_data, monkeypatch):
    """The arrays cache stores which items were unreadable, so a hit never loads the decoded cache."""
    from camp import caches, data, preprocess

    dataset = data.load_dataset(synthetic_data)
    fingerprint = data.fingerprint(dataset.items)
    config = preprocess.PreprocessConfig(mode="gray", size=24)
    first = caches.load_arrays(dataset.items, fingerprint, config, progress=False)
    caches._MEMORY.clear()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode")

    monkeypatch.setattr(caches, "load_decoded", no_decoding)
    second = caches.load_arrays(dataset.items, fingerprint, config, progress=False)
    assert second.cache_hit and not first.cache_hit
    assert np.array_equal(first.x, second.x)
    assert [item.relpath for item in second.items] == [item.relpath for item in first.items]


# -- the array cache: concurrent writers, an unwritable disk ---------------------------------------------

def test_concurrent_array_cache_writes_do_not_collide(isolated):
    """Sweep workers may write the same preprocessed-array entry at once (one temporary name per writer)."""
    path = caches.cache_dir() / "arrays" / "same.npz"
    x = np.random.default_rng(0).integers(0, 255, (200, 24, 24, 1), dtype=np.uint8)
    assert run_concurrently(lambda: caches._write_arrays(path, x, {})) == []
    items = [Item(f"/{i}.jpg", f"{i}.jpg", "hat", 0, "train") for i in range(200)]
    cached, skipped = caches._read_arrays(path, items, PreprocessConfig(mode="gray", size=24))
    assert np.array_equal(cached, x) and skipped == {}
    assert [p.name for p in path.parent.iterdir()] == ["same.npz"]


def test_an_unwritable_array_cache_costs_only_the_cache(isolated, synthetic_data, monkeypatch, no_memory_cache,
                                                        capsys):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    items = load_dataset(synthetic_data).split("test")[:6]
    monkeypatch.setattr(preprocess.np, "savez", disk_full)
    arrays = caches.load_arrays(items, f"full-{uuid.uuid4().hex[:6]}", PreprocessConfig(size=16), progress=False)
    assert arrays.x.shape == (6, 16, 16, 1) and not arrays.cache_hit
    assert "could not write the array cache" in capsys.readouterr().err
    assert not list((caches.cache_dir() / "arrays").glob("*tmp*"))


def test_a_full_cache_disk_costs_only_the_cache_and_leaves_no_temporary_file(isolated, synthetic_data, monkeypatch,
                                                                               capsys):
    """ENOSPC while the decode cache and the array cache are written: one warning line each, the images are
    still decoded and preprocessed, and no `.tmp` file is left beside the entries."""
    import numpy as np

    from camp.caches import load_arrays
    from camp.data import load_dataset
    from camp.preprocess import PreprocessConfig

    monkeypatch.setattr(caches, "_MEMORY", {})
    items = load_dataset(synthetic_data).items[:6]

    def disk_full(handle, *args, **kwargs):
        handle.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", disk_full)
    decoded, skipped = caches.load_decoded(items, "full-disk", progress=False)
    assert len(decoded) == 6 and all(image is not None for image in decoded) and not skipped

    def savez_full(path, **arrays):
        with open(path, "wb") as handle:
            handle.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_full)
    arrays = load_arrays(items, "full-disk", PreprocessConfig(crop_method="none", mode="gray", size=24), progress=False)
    assert arrays.x.shape == (6, 24, 24, 1)
    err = capsys.readouterr().err
    assert "could not write the decode cache" in err and "could not write the array cache" in err
    assert "No space left on device" in err and "Traceback" not in err
    leftovers = [path.name for path in (isolated / "cache").rglob("*") if path.is_file()]
    assert not [name for name in leftovers if ".tmp" in name], leftovers
