"""Decoding: any image (path, encoded bytes, array) to an upright 8-bit BGR array, once, cached.

Each image is decoded at reduced resolution where the JPEG decoder allows it (`reduction` 1, 2, 4
or 8) and the decoded set is cached on disk under the dataset's fingerprint with a checksum, so a
sweep decodes every photo once. Unreadable files are skipped and named, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from camp.data import Item

REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
MAX_PIXELS = 80_000_000  # refuse decompression bombs beyond ~9000x9000


class UnreadableImage(ValueError):
    """An input that is not a decodable image; the message says which and why."""


def cache_dir() -> Path:
    """Where derived arrays go: $CAMP_CACHE, else .cache/camp in the working directory (git-ignored)."""
    return Path(os.environ.get("CAMP_CACHE", ".cache/camp"))


def decode_bytes(data: bytes, reduction: int = 2, where: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 BGR, EXIF-upright, at 1/`reduction` size for JPEG."""
    if reduction not in REDUCED_FLAGS:
        raise ValueError(f"reduction must be one of {sorted(REDUCED_FLAGS)}, got {reduction}")
    if len(data) == 0:
        raise UnreadableImage(f"{where}: empty file (0 bytes)")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        raise UnreadableImage(f"{where}: truncated JPEG (no end-of-image marker)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    is_jpeg = data[:2] == b"\xff\xd8"
    image = cv2.imdecode(buffer, REDUCED_FLAGS[reduction] if is_jpeg else cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableImage(f"{where}: not a readable image")
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8)
    if not is_jpeg and reduction > 1:
        image = cv2.resize(image, (max(1, image.shape[1] // reduction), max(1, image.shape[0] // reduction)),
                           interpolation=cv2.INTER_AREA)
    return image


def decode_path(path: str | Path, reduction: int = 2) -> np.ndarray:
    """Read and decode one file; any failure is an `UnreadableImage` naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImage(f"{path}: cannot read ({error.strerror or error})") from None
    return decode_bytes(data, reduction, str(path))


def from_array(array: np.ndarray, reduction: int = 2, where: str = "<array>") -> np.ndarray:
    """An HxW or HxWxC (C=1,3,4) uint8 RGB(A) array, as decoded at full size -> the decoder's BGR output."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise UnreadableImage(f"{where}: expected dtype uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise UnreadableImage(f"{where}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[2] == 1:
        bgr = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    elif array.shape[2] == 3:
        bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    else:
        bgr = cv2.cvtColor(array, cv2.COLOR_RGBA2BGR)
    if reduction > 1:
        bgr = cv2.resize(bgr, (max(1, bgr.shape[1] // reduction), max(1, bgr.shape[0] // reduction)),
                         interpolation=cv2.INTER_AREA)
    return bgr


def decode_any(value, reduction: int = 2, where: str = "<input>") -> np.ndarray:
    """A path (str/Path), encoded bytes, or an RGB array -> BGR uint8."""
    if isinstance(value, np.ndarray):
        return from_array(value, reduction, where)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(value), reduction, where)
    if isinstance(value, (str, Path)):
        return decode_path(value, reduction)
    raise UnreadableImage(f"{where}: expected a file path, image bytes or a uint8 array, got {type(value).__name__}")


def _decode_item(args):
    path, reduction = args
    try:
        return decode_path(path, reduction), None
    except UnreadableImage as error:
        return None, str(error)


def decode_items(items: list[Item], reduction: int = 2, progress: bool = True):
    """Decode every item in parallel: (list of arrays or None, {relpath: reason} for the skipped)."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(tqdm(pool.map(_decode_item, [(item.path, reduction) for item in items], chunksize=16),
                            total=len(items), desc=f"decode (1/{reduction})", unit="img", disable=not progress,
                            leave=False))
    images = [image for image, _ in results]
    skipped = {item.relpath: reason for item, (_, reason) in zip(items, results) if reason}
    return images, skipped


_MEMORY: dict[str, tuple[list, dict]] = {}


def load_decoded(items: list[Item], data_fingerprint: str, reduction: int = 2, progress: bool = True):
    """Decoded images for `items` (None where unreadable) and the skipped files, from cache when valid."""
    key = f"decoded-{data_fingerprint}-r{reduction}"
    if key in _MEMORY:
        return _MEMORY[key]
    directory = cache_dir() / "decoded"
    data_file, index_file = directory / f"{key}.npy", directory / f"{key}.json"
    loaded = _read_decoded(data_file, index_file, len(items))
    if loaded is None:
        images, skipped = decode_items(items, reduction, progress)
        _write_decoded(data_file, index_file, images, skipped)
        loaded = (images, skipped)
    _MEMORY[key] = loaded
    return loaded


def _write_decoded(data_file: Path, index_file: Path, images: list, skipped: dict) -> None:
    data_file.parent.mkdir(parents=True, exist_ok=True)
    shapes = [list(image.shape) if image is not None else None for image in images]
    flat = np.concatenate([image.reshape(-1) for image in images if image is not None] or [np.zeros(0, np.uint8)])
    unique = f"{os.getpid()}-{threading.get_ident()}"  # sweep workers may write the same entry at once
    temporary = data_file.with_name(f"{data_file.stem}.{unique}.tmp.npy")
    np.save(temporary, flat)
    os.replace(temporary, data_file)
    index = {"shapes": shapes, "skipped": skipped, "checksum": checksum(flat)}
    temporary_index = index_file.with_name(f"{index_file.stem}.{unique}.tmp")
    temporary_index.write_text(json.dumps(index))
    os.replace(temporary_index, index_file)


def _read_decoded(data_file: Path, index_file: Path, count: int):
    """The cached decode, or None when missing, truncated or not matching its checksum."""
    if not (data_file.is_file() and index_file.is_file()):
        return None
    try:
        index = json.loads(index_file.read_text())
        flat = np.load(data_file)
        shapes, skipped = index["shapes"], index["skipped"]
        if len(shapes) != count or checksum(flat) != index["checksum"]:
            return None
        if sum(int(np.prod(shape)) for shape in shapes if shape is not None) != flat.size:
            return None  # the index does not describe this payload
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
