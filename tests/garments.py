"""Garment scenes with a known box, for judging crop methods: a textured garment-shaped polygon
pasted on a plain, textured (wood planks) or patterned (tiles, carpet print) background.

Hand-checkable: `make_scene` returns the image, the true box (x, y, w, h) and the true mask;
`python -m tests.garments OUT.png` draws a contact sheet of the set with the true boxes.
Everything is drawn from a seed; nothing binary is committed.
"""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUNDS = ("plain", "textured", "patterned")
GARMENTS = ("tshirt", "pants", "hat", "shoes", "jacket")
MIN_CONTRAST = 45.0  # Lab distance between garment and background mean colours


def _polygons(kind: str, x: int, y: int, w: int, h: int) -> list[np.ndarray]:
    """Garment outline(s) in the box (x, y, w, h), as polygons (or thin ellipses for hat/shoes)."""
    def pts(rel):
        return np.array([[x + px * w, y + py * h] for px, py in rel], np.int32)

    if kind == "tshirt":
        return [pts([(0.3, 0), (0.7, 0), (1, 0.2), (0.88, 0.38), (0.78, 0.3), (0.78, 1), (0.22, 1), (0.22, 0.3),
                     (0.12, 0.38), (0, 0.2)])]
    if kind == "jacket":
        return [pts([(0.32, 0), (0.68, 0), (0.9, 0.1), (1, 1), (0.85, 1), (0.78, 0.4), (0.78, 1), (0.22, 1),
                     (0.22, 0.4), (0.15, 1), (0, 1), (0.1, 0.1)])]
    if kind == "pants":
        return [pts([(0.1, 0), (0.9, 0), (1, 1), (0.6, 1), (0.5, 0.3), (0.4, 1), (0, 1)])]
    if kind == "hat":
        crown = cv2.ellipse2Poly((x + w // 2, y + int(h * 0.45)), (int(w * 0.35), int(h * 0.45)), 0, 180, 360, 5)
        brim = cv2.ellipse2Poly((x + w // 2, y + int(h * 0.7)), (w // 2, int(h * 0.3)), 0, 0, 360, 5)
        return [crown, brim, pts([(0.15, 0.45), (0.85, 0.45), (0.85, 0.7), (0.15, 0.7)])]
    # a pair of shoes, side by side with a gap: two components
    left = cv2.ellipse2Poly((x + int(w * 0.22), y + h // 2), (int(w * 0.22), h // 2), 0, 0, 360, 5)
    right = cv2.ellipse2Poly((x + int(w * 0.78), y + h // 2), (int(w * 0.22), h // 2), 0, 0, 360, 5)
    return [left, right]


def _background(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(60, 230, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1.0 + 0.12 * (xx / width - 0.5) * rng.choice([-1, 1]) + 0.08 * (yy / height - 0.5)  # uneven light
    if kind == "plain":  # a bed sheet: one colour, light falloff, sensor noise
        image = base * light[..., None] + rng.normal(0, 3, size=(height, width, 1))
    elif kind == "textured":  # wood planks: tone per plank, grain, dark seams
        plank = int(rng.integers(18, 34))
        tone = rng.uniform(0.8, 1.2, size=width // plank + 2)[(xx // plank).astype(int)]
        grain = 0.08 * np.sin(xx * rng.uniform(0.6, 1.2) + 3 * np.sin(yy / rng.uniform(15, 40)))
        image = base * (tone * light * (1 + grain))[..., None] + rng.normal(0, 6, size=(height, width, 1))
        image[(xx % plank) < 2] *= 0.55
    else:  # tiles with grout, or a carpet with a repeated print
        image = base * light[..., None] + rng.normal(0, 4, size=(height, width, 1))
        if rng.random() < 0.5:
            tile = int(rng.integers(20, 36))
            grout = (xx % tile < 3) | (yy % tile < 3)
            image[grout] = base * 0.45
        else:
            ink = rng.uniform(30, 200, size=3)
            step = int(rng.integers(16, 26))
            for cy in range(step // 2, height + step, step):
                for cx in range((cy // step % 2) * step // 2, width + step, step):
                    cv2.ellipse(image, (cx, cy), (step // 3, step // 5), int(rng.integers(0, 180)), 0, 360,
                                ink.tolist(), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def _lab_mean(pixels_bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels_bgr.reshape(-1, 1, 3), cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32).mean(0)


def _garment_colour(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    reference = _lab_mean(background)
    for _ in range(200):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(_lab_mean(colour.astype(np.uint8)[None]) - reference) >= MIN_CONTRAST:
            return colour
    return 255 - background.reshape(-1, 3).mean(0)


def make_scene(background: str, garment: str, rng: np.random.Generator, height: int = 240, width: int = 180):
    """(BGR image, true box (x, y, w, h), true mask uint8) of one garment on one background."""
    image = _background(background, height, width, rng)
    box_w = int(width * rng.uniform(0.4, 0.75))
    low, high = (0.3, 0.6) if garment in ("hat", "shoes") else (0.45, 0.75)
    box_h = int(height * rng.uniform(low, high))
    x = int(rng.integers(int(width * 0.06), width - box_w - int(width * 0.06)))
    y = int(rng.integers(int(height * 0.06), height - box_h - int(height * 0.06)))
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, _polygons(garment, x, y, box_w, box_h), 255)
    colour = _garment_colour(image, rng)
    yy, xx = np.mgrid[0:height, 0:width]
    cloth = np.broadcast_to(colour, (height, width, 3)).astype(np.float32).copy()
    style = rng.integers(0, 3)
    if style == 1:  # stripes
        period = rng.uniform(6, 14)
        cloth *= (1 - 0.25 * ((yy // period) % 2))[..., None]
    elif style == 2:  # a print: small dots of a second colour
        for _ in range(int(rng.integers(6, 16))):
            px, py = int(rng.integers(x, x + box_w)), int(rng.integers(y, y + box_h))
            cv2.circle(cloth, (px, py), int(rng.integers(2, 6)), rng.uniform(0, 255, size=3).tolist(), -1)
    cloth *= (1 + rng.normal(0, 0.04, size=(height, width, 1)))  # weave
    garment_pixels = mask > 0
    image[garment_pixels] = np.clip(cloth[garment_pixels], 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    truth = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return image, truth, mask


def make_set(per_background: int = 10, seed: int = 0, height: int = 240, width: int = 180):
    """[(background kind, garment kind, image, box, mask)], cycling through the garments."""
    rng = np.random.default_rng(seed)
    scenes = []
    for background in BACKGROUNDS:
        for index in range(per_background):
            garment = GARMENTS[index % len(GARMENTS)]
            scenes.append((background, garment, *make_scene(background, garment, rng, height, width)))
    return scenes


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


if __name__ == "__main__":
    import sys

    scenes = make_set()
    tiles = []
    for _, _, image, (x, y, w, h), _ in scenes:
        tile = image.copy()
        cv2.rectangle(tile, (x, y), (x + w - 1, y + h - 1), (0, 0, 255), 2)
        tiles.append(tile)
    rows = [np.hstack(tiles[i:i + 10]) for i in range(0, len(tiles), 10)]
    cv2.imwrite(sys.argv[1] if len(sys.argv) > 1 else "garments.png", np.vstack(rows))
