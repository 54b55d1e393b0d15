"""camp's caches, under `cache_dir()` ($CAMP_CACHE, else .cache/camp: git-ignored), each entry keyed by what
made it and checked before use: the decoded images of a dataset (`load_decoded`: keyed by the dataset's
fingerprint and the decode reduction, one memory-mapped payload with a CRC-32) and the preprocessed model
inputs (`load_arrays`: keyed by the preprocessing config and the fingerprint, with a checksum). A damaged or
mismatched entry is rebuilt; a cache that cannot be written (a full or read-only disk) costs the cache, not
the run. Entries are written under a name unique to the process and thread and renamed into place
(`atomic_path`), so sweep workers can fill the same entry at once. Raw images are only ever read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np

from camp import images as image_io
from camp import preprocess as preprocessing
from camp.data import Item
from camp.preprocess import PreprocessConfig


def cache_dir() -> Path:
    """Where derived arrays go: $CAMP_CACHE, else .cache/camp in the working directory (git-ignored)."""
    return Path(os.environ.get("CAMP_CACHE", ".cache/camp"))


_MEMORY: dict[str, tuple[list, dict]] = {}


def decoded_key(data_fingerprint: str, reduction: int) -> str:
    """The decoded cache's key (in memory, `_MEMORY`, and on disk) for a dataset decoded at 1/`reduction`."""
    return f"decoded-{data_fingerprint}-r{reduction}"


def load_decoded(items: list[Item], data_fingerprint: str, reduction: int = 2, progress: bool = True):
    """Decoded images for `items` (None where unreadable) and the skipped files, from cache when valid."""
    key = decoded_key(data_fingerprint, reduction)
    if key in _MEMORY:
        return _MEMORY[key]
    directory = cache_dir() / "decoded"
    data_file, index_file = directory / f"{key}.npy", directory / f"{key}.json"
    loaded = _read_decoded(data_file, index_file, len(items))
    if loaded is None:
        images, skipped = image_io.decode_items(items, reduction, progress)
        try:
            _write_decoded(data_file, index_file, images, skipped)
        except OSError as error:  # a full or read-only cache disk costs the cache, not the run
            print(f"warning: could not write the decode cache {data_file} ({error.strerror or error}); "
                  "continuing without it", file=sys.stderr)
        loaded = (images, skipped)
    _MEMORY[key] = loaded
    return loaded


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp"):
    """A temporary path beside `path`, unique to this process and thread (sweep workers may write the same
    cache entry at once): renamed onto `path` when the block succeeds, removed when it fails (a full disk
    leaves no orphan)."""
    temporary = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_decoded(data_file: Path, index_file: Path, images: list, skipped: dict) -> None:
    """One .npy of every pixel, image after image (no concatenated copy), and a JSON index with each
    image's shape, the skipped files and a CRC-32 of the payload (a damaged entry is rebuilt)."""
    data_file.parent.mkdir(parents=True, exist_ok=True)
    kept = [np.ascontiguousarray(image) for image in images if image is not None]
    shapes = [list(image.shape) if image is not None else None for image in images]
    crc = 0
    with atomic_path(data_file, ".tmp.npy") as temporary, open(temporary, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (sum(image.size for image in kept),)}
        np.lib.format.write_array_header_1_0(handle, header)
        for image in kept:
            handle.write(image.data)
            crc = zlib.crc32(image.data, crc)
    with atomic_path(index_file) as temporary:
        temporary.write_text(json.dumps({"shapes": shapes, "skipped": skipped, "crc32": crc}))


def _read_decoded(data_file: Path, index_file: Path, count: int):
    """The cached decode, or None when missing, truncated or not matching its checksum.

    The payload is memory-mapped read-only: the images are views into the OS page cache (shared by
    every sweep worker on this machine, and nothing can write into the cache through them). The
    CRC-32 check reads every byte once at several GB/s.
    """
    if not (data_file.is_file() and index_file.is_file()):
        return None
    try:
        index = json.loads(index_file.read_text())
        shapes, skipped, crc = index["shapes"], index["skipped"], index["crc32"]
        if len(shapes) != count or not isinstance(skipped, dict):
            return None
        flat = np.load(data_file, mmap_mode="r")
        if flat.dtype != np.uint8 or flat.ndim != 1:
            return None
        if sum(int(np.prod(shape)) for shape in shapes if shape is not None) != flat.size:
            return None  # the index does not describe this payload
        if (zlib.crc32(flat) if flat.size else 0) != crc:
            return None
        images, offset = [], 0
        for shape in shapes:
            if shape is None:
                images.append(None)
                continue
            size = int(np.prod(shape))
            images.append(flat[offset:offset + size].reshape(shape))
            offset += size
    except (ValueError, OSError, EOFError, KeyError, TypeError):
        return None
    return images, skipped


def checksum(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


@dataclasses.dataclass
class Arrays:
    """Model inputs for the readable items, in item order, and whether they came from the cache."""

    x: np.ndarray
    items: list[Item]
    skipped: dict
    cache_hit: bool
    key: str


def arrays_path(key: str) -> Path:
    """The array cache's entry for `key` (`PreprocessConfig.cache_key`)."""
    return cache_dir() / "arrays" / f"{key}.npz"


def load_arrays(items: list[Item], data_fingerprint: str, config: PreprocessConfig, progress: bool = True) -> Arrays:
    """Preprocessed arrays for `items`, from the config-keyed cache when present and intact.

    A cache hit touches no image: the entry stores which items were unreadable, so the decoded
    cache is only loaded (or built) on a miss.
    """
    key = config.cache_key(data_fingerprint)
    path = arrays_path(key)
    cached = _read_arrays(path, items, config)
    if cached is not None:
        x, skipped = cached
        return Arrays(x, [item for item in items if item.relpath not in skipped], skipped, True, key)
    decoded, skipped = load_decoded(items, data_fingerprint, config.decode_reduction, progress)
    arrays = arrays_from(items, decoded, skipped, config, key, progress)
    _write_arrays(path, arrays.x, skipped)
    return arrays


def arrays_from(items: list[Item], decoded: list, skipped: dict, config: PreprocessConfig, key: str,
                progress: bool = True) -> Arrays:
    """Model inputs for the items whose decoded image is not None (a cache miss; nothing is cached here)."""
    kept = [(item, image) for item, image in zip(items, decoded) if image is not None]
    x = preprocessing.preprocess_batch([image for _, image in kept], config, progress)
    return Arrays(x, [item for item, _ in kept], skipped, False, key)


def _write_arrays(path, x: np.ndarray, skipped: dict) -> None:
    """Write the cache entry via a temporary file unique to this process and thread (sweep workers may
    write the same entry at once), renamed into place; a failed write only costs the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".tmp.npz") as temporary:
            np.savez(temporary, x=x, checksum=np.array(checksum(x)), skipped=np.array(json.dumps(skipped)))
    except OSError as error:
        print(f"warning: could not write the array cache {path} ({error.strerror or error}); continuing without it",
              file=sys.stderr)


def _read_arrays(path, items: list[Item], config: PreprocessConfig):
    """(arrays, skipped) from an intact cache entry, else None (missing, damaged, or not matching)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as archive:
            x, stored = archive["x"], str(archive["checksum"])
            skipped = json.loads(str(archive["skipped"]))
    except (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile):
        return None  # damaged or not ours: rebuilt by the caller
    if not isinstance(skipped, dict):
        return None
    count = sum(item.relpath not in skipped for item in items)
    if x.shape != (count, *config.input_shape) or checksum(x) != stored:
        return None
    return x, skipped
