"""The camp crop recipe with every knob: margins -> scale -> gray -> adaptive threshold -> median
blur -> close -> gradient -> contours -> box -> crop -> resize; and the config-keyed array cache.

`crop_method` picks how the box is found: `recipe` (the camp's edges), `none` (whole frame), or a
method that models the background and also gives a garment mask (`border`, `grabcut`, `saliency`;
see `camp.crop`). With `mask_background` the non-garment pixels are blanked before the crop.

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

from camp import crop as crop_methods
from camp import images as image_io

MODES = ("binary", "gray", "color")
BOX_RULES = ("union", "largest")
CROP_METHODS = ("recipe", "none", "border", "grabcut", "saliency")
MASK_FILLS = ("mean", "zero")
#: part of every array cache key: bump it when the pipeline's output changes for the same knobs
#: (2: boxes from connected components; equal boxes under `largest` resolve in raster order)
PIPELINE_VERSION = 2


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
    # background-model crop methods (camp.crop); ignored by recipe/none
    crop_work_size: int = 96  # longer side (px) the mask is computed at
    crop_morph: float = 0.03  # open/close kernel, fraction of crop_work_size (0: off)
    component_keep: float = 0.3  # keep components >= this x the largest one's area
    border_width: float = 0.05  # border strip that shows the background, fraction of the shorter side
    border_clusters: int = 3  # k-means colours of the border strip
    border_threshold: float = 20.0  # Lab distance from every border colour that makes a pixel garment
    grabcut_margin: float = 0.05  # initial rectangle inset from each side, fraction of the side
    grabcut_iters: int = 3
    saliency_threshold: float = 2.0  # garment = saliency above this x the mean saliency
    crop_pad: float = 0.0  # grow the box by this fraction of its size on each side (every method)
    mask_background: bool = False  # blank pixels outside the garment mask (recipe/none: no mask)
    mask_fill: str = "mean"  # what blanked pixels become: mean background value, or 0
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
        ranges = {"crop_work_size": (32, 512), "crop_morph": (0.0, 0.2), "component_keep": (0.0, 1.0),
                  "border_width": (0.01, 0.25), "border_clusters": (1, 8), "border_threshold": (1.0, 100.0),
                  "grabcut_margin": (0.01, 0.3), "grabcut_iters": (1, 10), "saliency_threshold": (0.5, 5.0),
                  "crop_pad": (0.0, 0.5)}
        for name, (low, high) in ranges.items():
            value, number = getattr(self, name), int if isinstance(high, int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, number) or not low <= value <= high:
                kind = "an integer" if number is int else "a number"
                raise ValueError(f"{name} must be {kind} in [{low}, {high}], got {value!r}")
        if not isinstance(self.mask_background, bool):
            raise ValueError(f"mask_background must be true or false, got {self.mask_background!r}")
        if self.mask_fill not in MASK_FILLS:
            raise ValueError(f"mask_fill must be one of {MASK_FILLS}, got {self.mask_fill!r}")
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
        payload = json.dumps({"data": data_fingerprint, "pipeline": PIPELINE_VERSION, **dataclasses.asdict(self)},
                             sort_keys=True)
        return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


@dataclasses.dataclass
class Steps:
    """What the pipeline saw: the working BGR image, its binarized form, the box and the model input."""

    working: np.ndarray
    binary: np.ndarray
    box: tuple[int, int, int, int]  # x, y, width, height in `working`
    output: np.ndarray
    mask: np.ndarray | None = None  # uint8 HxW of `working`, 255 = garment (recipe/none: all 255)


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
    """Morphology close + gradient on the binary image, then the union or largest box of its shapes.

    A shape is an 8-connected component: the same boxes as the recipe's external contours
    (`cv2.findContours`, RETR_EXTERNAL) for the union, found without a Python loop over contours.
    A component inside another's hole has a box inside its parent's, so it never changes the union
    or wins `largest`; among equally large boxes `largest` takes the first in raster order.
    """
    edges = binary
    kernel = np.ones((config.morph_kernel, config.morph_kernel), np.uint8)
    if config.morph_close:
        edges = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, kernel)
    if config.morph_gradient:
        edges = cv2.morphologyEx(edges, cv2.MORPH_GRADIENT, kernel)
    if config.box_rule == "union" and config.min_area == 0:
        box = cv2.boundingRect(edges)  # the union of every shape's box is the box of all edge pixels
        return box if box[2] * box[3] > 0 else whole_frame(gray)
    _, _, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
    stats = stats[1:, :4].astype(np.int64)  # x, y, width, height; label 0 is the background
    areas = stats[:, 2] * stats[:, 3]
    kept = (areas > 0) & (areas >= config.min_area * gray.shape[0] * gray.shape[1])
    stats, areas = stats[kept], areas[kept]
    if not len(stats):
        return whole_frame(gray)
    if config.box_rule == "largest":
        return tuple(int(value) for value in stats[int(np.argmax(areas))])
    x0, y0 = stats[:, 0].min(), stats[:, 1].min()
    x1, y1 = (stats[:, 0] + stats[:, 2]).max(), (stats[:, 1] + stats[:, 3]).max()
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def whole_frame(gray: np.ndarray):
    return (0, 0, gray.shape[1], gray.shape[0])


def _with_full_mask(find_box: Callable) -> Callable:
    def finder(working, gray, binary, config):
        return find_box(working, gray, binary, config), np.full(gray.shape[:2], 255, np.uint8)
    return finder


def _background_model(method: str) -> Callable:
    return lambda working, gray, binary, config: crop_methods.find(method, working, config)


#: crop method name -> function(working BGR, gray, binary, config) -> (box (x, y, w, h), mask uint8 HxW)
BOX_FINDERS: dict[str, Callable] = {
    "recipe": _with_full_mask(recipe_box),
    "none": _with_full_mask(lambda working, gray, binary, config: whole_frame(gray)),
    **{method: _background_model(method) for method in crop_methods.MASKERS},
}


def pad_box(box, pad: float, width: int, height: int):
    """Grow (x, y, w, h) by `pad` of its size on each side, clipped to the frame."""
    x, y, w, h = box
    dx, dy = int(round(w * pad)), int(round(h * pad))
    x0, y0 = max(0, x - dx), max(0, y - dy)
    return (x0, y0, min(width, x + w + dx) - x0, min(height, y + h + dy) - y0)


def blank_background(source: np.ndarray, mask: np.ndarray, fill: str) -> np.ndarray:
    """`source` with pixels where `mask` is 0 set to the mean of those pixels (`mean`) or 0."""
    background = mask == 0
    if not background.any():
        return source
    out = source.copy()
    out[background] = np.round(source[background].mean(axis=0)).astype(np.uint8) if fill == "mean" else 0
    return out


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
    box, mask = BOX_FINDERS[config.crop_method](image, gray, binary, config)
    if config.crop_pad:
        box = pad_box(box, config.crop_pad, gray.shape[1], gray.shape[0])
    x, y, width, height = box
    source = binary if config.mode == "binary" else gray if config.mode == "gray" else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if config.mask_background:
        source = blank_background(source, mask, "zero" if config.mode == "binary" else config.mask_fill)
    crop = source[y:y + height, x:x + width]
    resized = cv2.resize(crop, (config.size, config.size), interpolation=cv2.INTER_AREA)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return Steps(image, binary, (x, y, width, height), resized, mask)


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
