"""What a client may send the served model, vetted before anything is decoded: base64 image bytes, raw bytes
or arrays become image sources; file paths are refused, with one error whatever the path (a client learns
nothing about the server's files), unless the operator sets $CAMP_SERVE_PATHS to the folders allowed
(os.pathsep-separated): then a path inside one of them that is a regular file of at most
$CAMP_SERVE_MAX_BYTES (32 MiB) is read. A request's images may hold at most `MAX_REQUEST_PIXELS` in all
(each one at most `camp.images.MAX_PIXELS`), counted from their headers. The vetted sources are then decoded
(`decoded`: once per decode size) and preprocessed (`model_inputs`: once per preprocessing) on every core.
"""

from __future__ import annotations

import base64
import binascii
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from camp.images import UnreadableImage, decode_any, encoded_size
from camp.preprocess import PreprocessConfig, preprocess_image


def to_values(model_input) -> list:
    """The pyfunc's input (a DataFrame's `image` column, a batch array, a list, one value) -> one value per item."""
    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        return list(model_input[column])
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "biufc" and model_input.ndim >= 2:
        # (N, H, W, C) is a batch, (H, W, C) or (H, W) one image, whatever the dtype: each is then
        # checked on its own, so a float or oddly shaped array gets one error row naming the expected shape
        return list(model_input) if model_input.ndim >= 4 else [model_input]
    if isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
        return list(model_input)
    return [model_input]


PATHS_ENV = "CAMP_SERVE_PATHS"
REFUSED = object()  # a source already answered with an error (None is a value a client may send)
MAX_BYTES_ENV = "CAMP_SERVE_MAX_BYTES"
MAX_FILE_BYTES = 32 * 2 ** 20
MAX_REQUEST_PIXELS = 200_000_000  # ~25 photos at the per-image cap; a batch of bombs stops here


def allowed_roots() -> list[Path]:
    """The folders $CAMP_SERVE_PATHS allows clients to name files in (none: paths are refused)."""
    return [Path(part).resolve() for part in os.environ.get(PATHS_ENV, "").split(os.pathsep) if part.strip()]


def refused(index: int) -> UnreadableImage:
    return UnreadableImage(f"item {index}: not base64-encoded image bytes (file paths are not read by the served "
                           f"model unless the server sets ${PATHS_ENV} to the folders that hold them)")


def allowed_path(value: str, index: int, roots: list[Path]):
    """A path inside an allowed root, if it is a regular file within the size cap; else an error that
    does not tell whether anything exists outside the roots."""
    import stat

    path = Path(value).expanduser()
    resolved = path.resolve() if path.is_absolute() else (Path.cwd() / path).resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise refused(index)
    try:
        status = os.stat(resolved)
    except OSError as error:
        raise UnreadableImage(f"{value}: cannot read ({error.strerror or error}); check that the file exists and "
                              "that this user may read it") from None
    if not stat.S_ISREG(status.st_mode):
        raise UnreadableImage(f"{value}: not a regular file")
    limit = int(os.environ.get(MAX_BYTES_ENV) or MAX_FILE_BYTES)
    if status.st_size > limit:
        raise UnreadableImage(f"{value}: {status.st_size} bytes, over the served model's limit of {limit} "
                              f"(${MAX_BYTES_ENV})")
    return str(resolved) if not path.is_absolute() else value


def as_image_source(value, index: int = 0, roots: list[Path] | None = None):
    """What a client sent -> bytes, an array, or (only inside $CAMP_SERVE_PATHS) a vetted path."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        roots = allowed_roots() if roots is None else roots
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            decoded = None
        # with allowed roots, a string that is not base64 is a path; so is a short one ("abcd" decodes too)
        if roots and len(value) < 4096 and (decoded is None or len(value) <= 64):
            return allowed_path(value, index, roots)
        if decoded is None:
            raise refused(index)
        return decoded
    return value


def encoded_pixels(source) -> int:
    """Pixels an item will decode to, read from its header before decoding (0 when unknown)."""

    if isinstance(source, np.ndarray):
        return int(np.prod(source.shape[:2])) if source.ndim >= 2 else 0
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = encoded_size(bytes(source))
        return size[0] * size[1] if size else 0
    return 0


def vet(values) -> tuple[list, list]:
    """Client values -> decodable sources (`REFUSED` where refused) and (index, error) pairs, within the
    request's pixel budget."""
    roots, sources, errors, total = allowed_roots(), [], [], 0
    for index, value in enumerate(values):
        try:
            source = as_image_source(value, index, roots)
            total += encoded_pixels(source)
            if total > MAX_REQUEST_PIXELS:
                raise UnreadableImage(f"item {index}: the request's images exceed {MAX_REQUEST_PIXELS / 1e6:.0f} "
                                      "megapixels in all; send fewer or smaller images per request")
            sources.append(source)
        except UnreadableImage as error:
            sources.append(REFUSED)
            errors.append((index, str(error)))
    return sources, errors


def _threaded(function, indices: list[int]) -> list:
    """`function` over `indices`, on every core for a batch (decoding and OpenCV release the GIL); one item
    runs inline, with no pool to start, for latency."""
    if len(indices) > 1:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return list(pool.map(function, indices))
    return [function(index) for index in indices]


def decoded(sources, reduction: int) -> list:
    """Each source decoded at 1/`reduction` size: (image, None), (None, error) when it cannot be read, or
    None for a `REFUSED` source."""
    def one(index: int):
        try:
            return decode_any(sources[index], reduction, where=f"item {index}"), None
        except UnreadableImage as error:
            return None, str(error)

    wanted = [index for index, source in enumerate(sources) if source is not REFUSED]
    out: list = [None] * len(sources)
    for index, result in zip(wanted, _threaded(one, wanted)):
        out[index] = result
    return out


def model_inputs(decoded: list, preprocess: PreprocessConfig) -> tuple[np.ndarray | None, list[int], list]:
    """Preprocessed model inputs for the decoded images (`decoded`): (N, H, W, C) inputs, their rows in
    the request, and (index, error) for the ones that could not be read or preprocessed."""
    def one(index: int):
        image, error = decoded[index]
        if error is not None:
            return None, error
        try:
            return preprocess_image(image, preprocess), None
        except UnreadableImage as problem:
            return None, str(problem)

    wanted = [index for index, result in enumerate(decoded) if result is not None]
    results = _threaded(one, wanted)
    inputs = [image for image, _ in results if image is not None]
    rows = [index for index, (image, _) in zip(wanted, results) if image is not None]
    errors = [(index, message) for index, (_, message) in zip(wanted, results) if message is not None]
    return (np.stack(inputs) if inputs else None), rows, errors
