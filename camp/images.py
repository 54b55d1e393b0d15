"""Decoding: any image (path, encoded bytes, array) to an upright 8-bit BGR array, once, cached.

Each image is decoded at reduced resolution where the JPEG decoder allows it (`reduction` 1, 2, 4
or 8); `camp.caches` keeps the decoded set on disk under the dataset's fingerprint, so a sweep decodes
every photo once. Unreadable files are skipped and named, never fatal.

What counts as readable (each refusal is an `UnreadableImage` naming the file and what to do):

- JPEG: colour, grayscale and CMYK; EXIF orientation applied (decoded upright). Before decoding,
  the marker structure is walked: a file that ends early is "truncated", one with a broken
  segment, a stray marker or out-of-order restart markers is "corrupt". Bit flips inside the
  compressed pixel data leave the structure intact and cannot be told from a real photo.
- PNG and the other formats: 8- or 16-bit, gray or colour. Transparent pixels (an alpha channel
  or a transparent palette entry) are composited onto **white**, not black, so a garment cut out
  on a transparent background looks like the dark-on-light product photos the recipe expects.
- Size: images over `MAX_PIXELS` (80 megapixels, about 8900x8900) are refused before decoding when
  the header gives the size (JPEG, PNG), after decoding otherwise. 8000x8000 (64 Mpx) is read;
  JPEGs are decoded at 1/`reduction` size inside the decoder, so it costs 4000x4000 at reduction 2.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from camp.data import Item

REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
MAX_PIXELS = 80_000_000  # refuse decompression bombs beyond ~8900x8900 (8000x8000 is read)
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (baseline, progressive, lossless, ...)
_SEGMENTS = _SOF | {0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xFE} | set(range(0xE0, 0xFE))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UnreadableImage(ValueError):
    """An input that is not a decodable image; the message says which and why."""


def decode_bytes(data: bytes, reduction: int = 2, where: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 BGR, EXIF-upright, at 1/`reduction` size for JPEG."""
    if reduction not in REDUCED_FLAGS:
        raise ValueError(f"reduction must be one of {sorted(REDUCED_FLAGS)}, got {reduction}")
    if len(data) == 0:
        raise UnreadableImage(f"{where}: empty file (0 bytes); copy it again or leave it out")
    is_jpeg = data[:2] == b"\xff\xd8"
    size = None
    if is_jpeg:
        problem, size, truncated = jpeg_structure(data)
        if problem:
            kind = "truncated JPEG" if truncated else "corrupt JPEG"
            raise UnreadableImage(f"{where}: {kind} ({problem}); copy or export it again, or leave it out")
    elif data[:8] == PNG_SIGNATURE and len(data) >= 24:
        size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
    if size is not None:
        _check_pixels(size[0], size[1], where)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, REDUCED_FLAGS[reduction]) if is_jpeg else _decode_other(buffer, data)
    except cv2.error as error:  # e.g. OpenCV's own size limit, an unsupported variant of a format
        message = (str(error).strip().splitlines() or [type(error).__name__])[-1][:200]
        raise UnreadableImage(f"{where}: not a readable image (the decoder failed: {message}); convert it to "
                              "JPEG or PNG, or leave it out") from None
    if image is None:
        raise UnreadableImage(f"{where}: not a readable image (expected JPEG, PNG, BMP, WebP or TIFF); convert "
                              "it to JPEG or PNG, or leave it out")
    if size is None:
        _check_pixels(image.shape[1], image.shape[0], where)
    image = _to_uint8(image)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if not is_jpeg and reduction > 1:
        image = cv2.resize(image, (max(1, image.shape[1] // reduction), max(1, image.shape[0] // reduction)),
                           interpolation=cv2.INTER_AREA)
    return image


def encoded_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header or a PNG's IHDR, without decoding; None otherwise."""
    if data[:2] == b"\xff\xd8":
        return jpeg_structure(data)[1]
    if data[:8] == PNG_SIGNATURE and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _check_pixels(width: int, height: int, where: str) -> None:
    if width * height > MAX_PIXELS:
        raise UnreadableImage(f"{where}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over camp's "
                              f"limit of {MAX_PIXELS / 1e6:.0f} (camp.images.MAX_PIXELS); downscale it first")


def jpeg_structure(data: bytes) -> tuple[str | None, tuple[int, int] | None, bool]:
    """Walk a JPEG's markers without decoding: (problem or None, (width, height), whether it ends early).

    Segments must fit in the file, every marker must be one JPEG defines, compressed data may only
    hold stuffed bytes and in-order restart markers (when a restart interval is set), and a frame
    header and a scan must come before the end-of-image marker. Bytes after it are ignored.
    """
    size, scanned, restart, n, pos = None, False, False, len(data), 2
    while True:
        if pos >= n:
            return "the file ends before its end-of-image marker", size, True
        if data[pos] != 0xFF:
            return f"byte 0x{data[pos]:02x} at offset {pos} where a marker should be", size, False
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return "the file ends before its end-of-image marker", size, True
        marker, at = data[pos], pos - 1
        pos += 1
        if marker == 0xD9:
            if size is None or not scanned:
                return "no image data before the end-of-image marker", size, False
            rest = data[pos:]  # a trailer is fine, but not more compressed data ending in a second end marker
            if len(rest) > 64 and rest.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9") and b"\xff\xd8" not in rest:
                return f"an end-of-image marker at offset {at} inside the compressed data", size, False
            return None, size, False
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker not in _SEGMENTS:
            return f"unknown marker 0x{marker:02x} at offset {at}", size, False
        if pos + 2 > n:
            return "the file ends inside a segment header", size, True
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            return f"segment 0x{marker:02x} at offset {at} has an invalid length {length}", size, False
        if pos + length > n:
            return f"segment 0x{marker:02x} at offset {at} runs past the end of the file", size, True
        payload = data[pos + 2:pos + length]
        pos += length
        if marker in _SOF:
            if len(payload) < 6 or payload[5] == 0:
                return f"frame header at offset {at} is too short", size, False
            height, width = int.from_bytes(payload[1:3], "big"), int.from_bytes(payload[3:5], "big")
            if width == 0:
                return f"frame header at offset {at} gives width 0", size, False
            size = (width, height)
        elif marker == 0xDD:
            restart = len(payload) >= 2 and int.from_bytes(payload[:2], "big") > 0
        elif marker == 0xDA:
            if size is None:
                return f"scan at offset {at} comes before any frame header", size, False
            scanned = True
            pos, problem = _skip_scan(data, pos, restart)
            if problem:
                return problem, size, pos is None


def _skip_scan(data: bytes, start: int, restart: bool):
    """(offset of the marker that ends the compressed data, problem or None) for the scan at `start`."""
    scan = np.frombuffer(data, np.uint8, offset=start) if start < len(data) else np.zeros(0, np.uint8)
    ff = np.flatnonzero(scan[:-1] == 0xFF)
    following = scan[ff + 1]
    inside = (following == 0x00) | (following == 0xFF) | ((following >= 0xD0) & (following <= 0xD7))
    ends = np.flatnonzero(~inside)
    stop = ends[0] if ends.size else following.size
    restarts = following[:stop][(following[:stop] >= 0xD0) & (following[:stop] <= 0xD7)]
    if restarts.size and not restart:
        return start, f"restart marker inside the compressed data at offset {start} without a restart interval"
    if restarts.size and not np.array_equal(restarts, 0xD0 + np.arange(restarts.size) % 8):
        return start, f"restart markers out of order in the scan at offset {start}"
    if not ends.size:
        return None, "the file ends inside the compressed data"
    return start + int(ff[ends[0]]), None


def _decode_other(buffer: np.ndarray, data: bytes):
    """PNG/BMP/WebP/TIFF: alpha composited onto white (upright as OpenCV's colour decode), else colour."""
    if data[:8] == PNG_SIGNATURE and not _png_has_alpha(data):
        return cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # 16-bit and gray are converted by OpenCV
    raw = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 3 or raw.shape[2] != 4:
        return cv2.imdecode(buffer, cv2.IMREAD_COLOR) if raw is not None else None
    image = on_white(raw)
    if data[:8] != PNG_SIGNATURE or b"eXIf" in data:  # may carry an EXIF orientation the raw decode ignores
        image = oriented(image, exif_orientation(data))
    return image


def _png_has_alpha(data: bytes) -> bool:
    """A PNG's colour type says gray+alpha or RGBA, or a tRNS chunk makes palette entries transparent."""
    colour_type = data[25] if len(data) > 25 else 0
    header_end = data.find(b"IDAT")
    return colour_type in (4, 6) or b"tRNS" in data[:header_end if header_end > 0 else len(data)]


def on_white(image: np.ndarray) -> np.ndarray:
    """HxWx4 BGRA (8/16-bit or float in [0, 1]) -> HxWx3 uint8 BGR composited onto a white background."""
    full = 1.0 if image.dtype.kind == "f" else float(np.iinfo(image.dtype).max)
    colour = np.clip(image[..., :3].astype(np.float32) / full, 0, 1)
    alpha = np.clip(image[..., 3:4].astype(np.float32) / full, 0, 1)
    return np.round((colour * alpha + (1.0 - alpha)) * 255).astype(np.uint8)


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8; 1 when absent or unreadable), read by Pillow from the file's bytes."""
    from PIL import Image  # only for files that carry alpha and may carry EXIF: the rest never need it

    try:
        with Image.open(io.BytesIO(data)) as opened:
            value = int(opened.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block leaves the image as stored
        return 1
    return value if 1 <= value <= 8 else 1


def oriented(image: np.ndarray, orientation: int) -> np.ndarray:
    """`image` (H x W x C) turned upright for an EXIF orientation (as Pillow's ImageOps.exif_transpose)."""
    swapped = (1, 0, 2) if image.ndim == 3 else (1, 0)
    turn = {1: lambda i: i, 2: lambda i: i[:, ::-1], 3: lambda i: i[::-1, ::-1], 4: lambda i: i[::-1],
            5: lambda i: i.transpose(swapped), 6: lambda i: np.rot90(i, -1),
            7: lambda i: i[::-1, ::-1].transpose(swapped), 8: lambda i: np.rot90(i, 1)}[orientation]
    return np.ascontiguousarray(turn(image))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype.kind == "f":
        return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def decode_path(path: str | Path, reduction: int = 2) -> np.ndarray:
    """Read and decode one file; any failure is an `UnreadableImage` naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImage(f"{path}: cannot read ({error.strerror or error}); check that the file exists and "
                              "that this user may read it") from None
    return decode_bytes(data, reduction, str(path))


def from_array(array: np.ndarray, reduction: int = 2, where: str = "<array>") -> np.ndarray:
    """An HxW or HxWxC (C=1,3,4) uint8 RGB(A) array, as decoded at full size -> the decoder's BGR output."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise UnreadableImage(f"{where}: expected dtype uint8, got {array.dtype}; send (H, W, 3) uint8 RGB "
                              "arrays (or (H, W), (H, W, 1), (H, W, 4)), values 0-255")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise UnreadableImage(f"{where}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
    _check_pixels(array.shape[1], array.shape[0], where)
    if array.shape[2] == 1:
        bgr = cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    elif array.shape[2] == 3:
        bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    else:  # transparent pixels onto white, as for PNG files
        bgr = cv2.cvtColor(on_white(array), cv2.COLOR_RGB2BGR)
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
