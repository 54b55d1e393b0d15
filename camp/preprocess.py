"""The camp crop recipe with every knob: margins -> scale -> gray -> adaptive threshold -> median
blur -> close -> gradient -> contours -> box -> crop -> resize; and the config-keyed array cache.

`PreprocessConfig()` is the recipe exactly as the camp wrote it (binary 32x32). `preprocess_image`
is the single function used for training arrays and by the served model, so both see the same input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import cv2
import numpy as np

from camp import images as image_io
from camp.data import Item

MODES = ("binary", "gray", "color")
BOX_RULES = ("union", "largest")
CROP_METHODS = ("recipe", "none")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Every knob of the crop pipeline; defaults reproduce the camp's recipe."""

    crop_top: float = 0.2
    crop_bottom: float = 0.3
    crop_left: float = 0.05
    crop_right: float = 0.05
    scale: float = 0.75
    decode_reduction: int = 2
    crop_method: str = "recipe"
    threshold_block: int = 15
    threshold_c: float = 2.0
    median_blur: int = 5
    morph_kernel: int = 3
    morph_close: bool = True
    morph_gradient: bool = True
    box_rule: str = "union"
    min_area: float = 0.0
    mode: str = "binary"
    size: int = 32

    def __post_init__(self):
        for name in ("crop_top", "crop_bottom", "crop_left", "crop_right"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1), got {value}")
        if self.crop_top + self.crop_bottom >= 0.95:
            raise ValueError(f"crop_top + crop_bottom must leave some image (< 0.95), got {self.crop_top + self.crop_bottom:.2f}")
        if self.crop_left + self.crop_right >= 0.95:
            raise ValueError(f"crop_left + crop_right must leave some image (< 0.95), got {self.crop_left + self.crop_right:.2f}")
        if not 0.05 <= self.scale <= 2.0:
            raise ValueError(f"scale must be in [0.05, 2.0], got {self.scale}")
        if self.decode_reduction not in image_io.REDUCED_FLAGS:
            raise ValueError(f"decode_reduction must be one of {sorted(image_io.REDUCED_FLAGS)}, got {self.decode_reduction}")
        if self.crop_method not in CROP_METHODS:
            raise ValueError(f"crop_method must be one of {CROP_METHODS}, got {self.crop_method!r}")
        if self.threshold_block < 3 or self.threshold_block % 2 == 0:
            raise ValueError(f"threshold_block must be odd and >= 3, got {self.threshold_block}")
        if not -50 <= self.threshold_c <= 50:
            raise ValueError(f"threshold_c must be in [-50, 50], got {self.threshold_c}")
        if self.median_blur != 0 and (self.median_blur < 3 or self.median_blur % 2 == 0):
            raise ValueError(f"median_blur must be 0 (off) or odd and >= 3, got {self.median_blur}")
        if not 1 <= self.morph_kernel <= 31:
            raise ValueError(f"morph_kernel must be in [1, 31], got {self.morph_kernel}")
        if self.box_rule not in BOX_RULES:
            raise ValueError(f"box_rule must be one of {BOX_RULES}, got {self.box_rule!r}")
        if not 0.0 <= self.min_area < 1.0:
            raise ValueError(f"min_area must be a fraction of the frame in [0, 1), got {self.min_area}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 8 <= self.size <= 256:
            raise ValueError(f"size must be in [8, 256], got {self.size}")

    @property
    def channels(self) -> int:
        return 3 if self.mode == "color" else 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels)

    def cache_key(self, data_fingerprint: str) -> str:
        payload = json.dumps({"data": data_fingerprint, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


@dataclasses.dataclass
class Steps:
    """What the pipeline saw: the working BGR image, its binarized form, the box and the model input."""

    working: np.ndarray
    binary: np.ndarray
    box: tuple[int, int, int, int]  # x, y, width, height in `working`
    output: np.ndarray


def cut_margins(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Drop the configured fraction of rows/columns from each side (rounded to whole pixels)."""
    height, width = image.shape[:2]
    top, bottom = int(round(height * config.crop_top)), int(round(height * config.crop_bottom))
    left, right = int(round(width * config.crop_left)), int(round(width * config.crop_right))
    if top + bottom >= height or left + right >= width:
        return image  # a 1-pixel image has no margin to cut
    return image[top:height - bottom, left:width - right]


def binarize(gray: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Gaussian adaptive threshold (inverted: dark-on-light objects become white), then median blur."""
    block = min(config.threshold_block, _largest_odd(min(gray.shape[:2])))
    if block < 3:
        binary = np.zeros_like(gray)
    else:
        binary = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV,
                                       block, config.threshold_c)
    if config.median_blur:
        binary = cv2.medianBlur(binary, config.median_blur)
    return binary


def _largest_odd(value: int) -> int:
    return value if value % 2 else value - 1


def recipe_box(working: np.ndarray, gray: np.ndarray, binary: np.ndarray, config: PreprocessConfig):
    """Morphology close + gradient on the binary image, contours, then the union or largest box."""
    edges = binary
    kernel = np.ones((config.morph_kernel, config.morph_kernel), np.uint8)
    if config.morph_close:
        edges = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, kernel)
    if config.morph_gradient:
        edges = cv2.morphologyEx(edges, cv2.MORPH_GRADIENT, kernel)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    frame_area = gray.shape[0] * gray.shape[1]
    boxes = [cv2.boundingRect(contour) for contour in contours]
    boxes = [box for box in boxes if box[2] * box[3] >= config.min_area * frame_area and box[2] * box[3] > 0]
    if not boxes:
        return whole_frame(gray)
    if config.box_rule == "largest":
        return max(boxes, key=lambda box: box[2] * box[3])
    x0 = min(box[0] for box in boxes)
    y0 = min(box[1] for box in boxes)
    x1 = max(box[0] + box[2] for box in boxes)
    y1 = max(box[1] + box[3] for box in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def whole_frame(gray: np.ndarray):
    return (0, 0, gray.shape[1], gray.shape[0])


#: crop method name -> function(working BGR, gray, binary, config) -> box (x, y, w, h)
BOX_FINDERS: dict[str, Callable] = {"recipe": recipe_box, "none": lambda working, gray, binary, config: whole_frame(gray)}


def preprocess_steps(decoded: np.ndarray, config: PreprocessConfig, reduction: int | None = None) -> Steps:
    """Run the pipeline on one decoded BGR image (decoded at 1/`reduction` of the original size)."""
    reduction = config.decode_reduction if reduction is None else reduction
    image = cut_margins(decoded, config)
    factor = config.scale * reduction
    if abs(factor - 1.0) > 1e-9:
        width = max(1, int(round(image.shape[1] * factor)))
        height = max(1, int(round(image.shape[0] * factor)))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    binary = binarize(gray, config)
    x, y, width, height = BOX_FINDERS[config.crop_method](image, gray, binary, config)
    source = {"binary": binary, "gray": gray, "color": cv2.cvtColor(image, cv2.COLOR_BGR2RGB)}[config.mode]
    crop = source[y:y + height, x:x + width]
    resized = cv2.resize(crop, (config.size, config.size), interpolation=cv2.INTER_AREA)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return Steps(image, binary, (x, y, width, height), resized)


def preprocess_image(decoded: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One decoded BGR image -> the model input, shape `config.input_shape`, dtype uint8."""
    return preprocess_steps(decoded, config).output


def preprocess_batch(decoded_images: list, config: PreprocessConfig, progress: bool = False) -> np.ndarray:
    """Many decoded images -> (N, size, size, C) uint8, in parallel threads (OpenCV releases the GIL)."""
    from tqdm import tqdm

    output = np.zeros((len(decoded_images), *config.input_shape), np.uint8)

    def work(index):
        output[index] = preprocess_image(decoded_images[index], config)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.map(work, range(len(decoded_images))), total=len(decoded_images), desc="preprocess",
                      unit="img", disable=not progress, leave=False):
            pass
    return output


@dataclasses.dataclass
class Arrays:
    """Model inputs for the readable items, in item order, and whether they came from the cache."""

    x: np.ndarray
    items: list[Item]
    skipped: dict
    cache_hit: bool
    key: str


def load_arrays(items: list[Item], data_fingerprint: str, config: PreprocessConfig, progress: bool = True) -> Arrays:
    """Preprocessed arrays for `items`, from the config-keyed cache when present and intact."""
    decoded, skipped = image_io.load_decoded(items, data_fingerprint, config.decode_reduction, progress)
    kept = [(item, image) for item, image in zip(items, decoded) if image is not None]
    key = config.cache_key(data_fingerprint)
    path = image_io.cache_dir() / "arrays" / f"{key}.npz"
    cached = _read_arrays(path, len(kept), config)
    if cached is not None:
        return Arrays(cached, [item for item, _ in kept], skipped, True, key)
    x = preprocess_batch([image for _, image in kept], config, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, x=x, checksum=np.array(image_io.checksum(x)))
    os.replace(temporary, path)
    return Arrays(x, [item for item, _ in kept], skipped, False, key)


def _read_arrays(path, count: int, config: PreprocessConfig):
    if not path.is_file():
        return None
    try:
        with np.load(path) as archive:
            x, stored = archive["x"], str(archive["checksum"])
    except (ValueError, OSError, EOFError, KeyError):
        return None
    if x.shape != (count, *config.input_shape) or image_io.checksum(x) != stored:
        return None
    return x
