"""Crop methods that model the background, for real photos of garments on beds, floors and tiles.

The camp recipe (in `camp.preprocess`) finds edges; on a textured floor every plank is an edge and
its box is the whole frame. The methods here instead say what the background looks like and keep
what does not look like it:

- `border`:   the frame's border pixels are background. Their Lab colours (after a blur that melts
              texture) are clustered with k-means; a pixel far (> `border_threshold`) from every
              cluster is garment. Fast; fails where the garment has the floor's colour, or covers
              much of the border (its colour then counts as background).
- `grabcut`:  OpenCV's GrabCut (colour GMMs + graph cut), initialised with a centred rectangle
              (`grabcut_margin` from each side) and run for `grabcut_iters` iterations. ~5x slower
              than `border`; its box never reaches outside that rectangle.
- `saliency`: spectral residual saliency (Hou & Zhang 2007) in numpy; pixels above
              `saliency_threshold` x the mean saliency are garment.

Each runs on a copy downscaled to `crop_work_size` pixels on its longer side (speed, and texture
averaging), cleans the mask with morphology (kernel `crop_morph` of that size), keeps the largest
connected component and every other one at least `component_keep` times its area (two shoes are
two components), fills the holes (a print the colour of the floor is still garment), and returns
(box, mask) in the coordinates of the image it was given: box (x, y, w, h), mask uint8 HxW with 255
for garment. An empty mask falls back to the whole frame.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SIDE = 8  # below this the methods return the whole frame


def whole(image: np.ndarray):
    """The whole frame as (box, mask)."""
    height, width = image.shape[:2]
    return (0, 0, width, height), np.full((height, width), 255, np.uint8)


def _downscale(image: np.ndarray, work_size: int) -> np.ndarray:
    height, width = image.shape[:2]
    factor = work_size / max(height, width)
    if factor >= 1.0:
        return image
    size = (max(1, int(round(width * factor))), max(1, int(round(height * factor))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _odd(value: float) -> int:
    value = max(1, int(round(value)))
    return value if value % 2 else value + 1


def finish(small_mask: np.ndarray, image: np.ndarray, config):
    """Clean the small mask (open + close), keep the big components, upscale; -> (box, mask)."""
    height, width = small_mask.shape
    kernel_size = _odd(config.crop_morph * max(height, width))
    if kernel_size > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
        small_mask = cv2.morphologyEx(small_mask, cv2.MORPH_OPEN, kernel)
        small_mask = cv2.morphologyEx(small_mask, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(small_mask, connectivity=8)
    if count <= 1:
        return whole(image)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= config.component_keep * areas.max()) + 1
    small_mask = fill_holes(np.isin(labels, keep).astype(np.uint8) * 255)
    mask = cv2.resize(small_mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    points = cv2.findNonZero(mask)
    if points is None:
        return whole(image)
    return cv2.boundingRect(points), mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background regions not reachable from the frame's edge become garment (a print, a shadow)."""
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 255)
    return mask | cv2.bitwise_not(flood)[1:-1, 1:-1]


def border_mask(image: np.ndarray, config) -> np.ndarray:
    """Garment = pixels far in Lab from every k-means colour of the border strip (small image)."""
    blur = _odd(0.04 * max(image.shape[:2]))
    smooth = cv2.GaussianBlur(image, (blur, blur), 0) if blur > 1 else image
    lab = cv2.cvtColor(smooth, cv2.COLOR_BGR2LAB).astype(np.float32)
    height, width = lab.shape[:2]
    strip = max(1, int(round(config.border_width * min(height, width))))
    border = np.concatenate([lab[:strip].reshape(-1, 3), lab[-strip:].reshape(-1, 3),
                             lab[strip:-strip, :strip].reshape(-1, 3), lab[strip:-strip, -strip:].reshape(-1, 3)])
    clusters = min(config.border_clusters, len(border))
    cv2.setRNGSeed(0)  # k-means++ draws from OpenCV's (thread-local) RNG: same image, same mask
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = cv2.kmeans(border, clusters, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    distance = np.full((height, width), np.inf, np.float32)
    for centre in centres:
        distance = np.minimum(distance, np.linalg.norm(lab - centre, axis=2))
    return (distance > config.border_threshold).astype(np.uint8) * 255


def grabcut_mask(image: np.ndarray, config) -> np.ndarray:
    """GrabCut from a centred rectangle `grabcut_margin` in from each side (small image)."""
    height, width = image.shape[:2]
    dx = max(1, int(round(config.grabcut_margin * width)))
    dy = max(1, int(round(config.grabcut_margin * height)))
    rect = (dx, dy, max(1, width - 2 * dx), max(1, height - 2 * dy))
    mask = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation uses k-means++ on OpenCV's RNG
    try:
        cv2.grabCut(image, mask, rect, background, foreground, config.grabcut_iters, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # e.g. a flat image: no colour model to learn
        return np.zeros((height, width), np.uint8)
    return np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)


def saliency_mask(image: np.ndarray, config) -> np.ndarray:
    """Spectral residual saliency of the gray image at 64 px, thresholded at k x its mean."""
    height, width = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    side = 64
    small = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8).astype(np.float32)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3), borderType=cv2.BORDER_REPLICATE)
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    saliency = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), 3.0)
    saliency = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
    return (saliency > config.saliency_threshold * saliency.mean()).astype(np.uint8) * 255


MASKERS = {"border": border_mask, "grabcut": grabcut_mask, "saliency": saliency_mask}


def find(method: str, image: np.ndarray, config):
    """(box, mask) of the garment in the BGR `image` by one of `MASKERS`."""
    if min(image.shape[:2]) < MIN_SIDE:
        return whole(image)
    small = _downscale(image, config.crop_work_size)
    if min(small.shape[:2]) < MIN_SIDE:
        small = image
    return finish(MASKERS[method](small, config), image, config)
