"""Synthetic clothing-like datasets drawn at test time (nothing binary is committed).

Each source class gets a distinct filled shape (so a small CNN can learn it in a few epochs) on a
textured background, at a known position, so crop tests can compare boxes with the truth.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: source class -> shape drawn; the names are clothing-small's, so the camp5 label map applies.
SHAPES = {"hat": "circle", "outwear": "tall_rectangle", "t-shirt": "t_shape", "pants": "legs", "shoes": "wide_ellipse"}


def draw_garment(shape: str, height: int, width: int, rng: np.random.Generator, background: str = "texture"):
    """One BGR image with a garment-like shape; returns (image, (x, y, w, h) box of the shape)."""
    image = _background(height, width, rng, background)
    colour = tuple(int(c) for c in rng.integers(0, 90, size=3))  # dark garment on a lighter background
    # inside the recipe's default margins (top 20%, bottom 30%, sides 5%)
    garment_height = int(height * rng.uniform(0.25, 0.4))
    garment_width = int(width * rng.uniform(0.35, 0.6))
    x = int(rng.integers(int(width * 0.08), int(width * 0.92) - garment_width))
    y = int(rng.integers(int(height * 0.22), int(height * 0.68) - garment_height + 1))
    mask = np.zeros((height, width), np.uint8)
    if shape == "circle":
        cv2.ellipse(mask, (x + garment_width // 2, y + garment_height // 2), (garment_width // 2, garment_height // 2), 0, 0, 360, 255, -1)
    elif shape == "tall_rectangle":
        cv2.rectangle(mask, (x + garment_width // 4, y), (x + 3 * garment_width // 4, y + garment_height), 255, -1)
    elif shape == "t_shape":
        cv2.rectangle(mask, (x, y), (x + garment_width, y + garment_height // 3), 255, -1)
        cv2.rectangle(mask, (x + garment_width // 3, y), (x + 2 * garment_width // 3, y + garment_height), 255, -1)
    elif shape == "legs":
        cv2.rectangle(mask, (x, y), (x + garment_width // 3, y + garment_height), 255, -1)
        cv2.rectangle(mask, (x + 2 * garment_width // 3, y), (x + garment_width, y + garment_height), 255, -1)
        cv2.rectangle(mask, (x, y), (x + garment_width, y + garment_height // 5), 255, -1)
    else:
        cv2.ellipse(mask, (x + garment_width // 2, y + 3 * garment_height // 4), (garment_width // 2, garment_height // 4), 0, 0, 360, 255, -1)
    image[mask > 0] = colour
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return image, box


def _background(height: int, width: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    base = rng.integers(170, 240)
    if kind == "plain":
        return np.full((height, width, 3), base, np.uint8)
    noise = rng.normal(0, 12, size=(height, width, 1))
    image = np.clip(base + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
    if kind == "pattern":
        step = int(rng.integers(12, 24))
        image[::step, :] = image[::step, :] // 2 + 60
        image[:, ::step] = image[:, ::step] // 2 + 60
    return image


def make_image_folder(root: Path, per_class: dict[str, int] | None = None, splits=("train", "validation"),
                      size=(120, 90), seed: int = 0) -> Path:
    """`root/<split>/<class>/*.jpg` with the shapes above; returns root."""
    rng = np.random.default_rng(seed)
    per_class = per_class or {"train": 16, "validation": 6, "test": 6}
    for split in splits:
        for source, shape in SHAPES.items():
            folder = root / split / source
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class.get(split, 6)):
                image, _ = draw_garment(shape, size[0], size[1], rng)
                cv2.imwrite(str(folder / f"{source}_{index:03d}.jpg"), image)
    return root
