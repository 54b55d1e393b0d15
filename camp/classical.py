"""The classical family (`model.family: hog_linear`): HOG features of the preprocessed image and a
multinomial logistic regression on them. It trains in seconds on the same arrays as the CNN, so it is
the floor every CNN trial is compared with and a cheap ensemble member.

`HogLinear.predict(x, batch_size=..., verbose=...)` has the Keras model's call shape, so the served
model, the report and ensembles use either family through the same code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MODEL_FILE = "model.pkl"


def hog_features(x: np.ndarray, cell: int, orientations: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, features) float32 HOG descriptors (2x2-cell blocks, L2-Hys), the values of
    `skimage.feature.hog`; colour images are taken as gray, since HOG describes shape.

    scikit-image's `hog` normalises each block in a Python loop (~1 ms an image at 64 px, most of a served
    ensemble's HOG member); here the gradients and the block normalisation run on the whole batch in NumPy,
    and only scikit-image's own cell histogram (compiled, without the GIL) runs per image, on threads."""
    if x.ndim != 4:
        raise ValueError(f"hog_features expects (N, H, W, C) images, got shape {x.shape}")
    height, width = x.shape[1:3]
    if min(height, width) < 2 * cell:
        raise ValueError(f"hog_cell {cell} needs images of at least {2 * cell}px; got {height}x{width} "
                         f"(raise preprocess.size or lower model.hog_cell)")
    try:
        from skimage.feature import _hoghistogram
    except ImportError:  # a scikit-image that moved its compiled histogram: its public hog, one image at a time
        return _hog_features_per_image(x, cell, orientations)
    images = _gray(x).astype(np.float64)
    # skimage's _hog_channel_gradient: centred differences, zero on the border rows / columns
    gradient_rows = np.zeros_like(images)
    gradient_rows[:, 1:-1] = images[:, 2:] - images[:, :-2]
    gradient_columns = np.zeros_like(images)
    gradient_columns[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    cells_down, cells_across = height // cell, width // cell
    histograms = np.zeros((len(x), cells_down, cells_across, orientations))

    def one(index):
        _hoghistogram.hog_histograms(gradient_columns[index], gradient_rows[index], cell, cell, width, height,
                                     cells_across, cells_down, orientations, histograms[index])
    _on_threads(one, range(len(x)))
    # every 2x2 block of cells, in skimage's order (block row, block column, cell row, cell column, orientation)
    blocks = np.stack([histograms[:, row:row + cells_down - 1, column:column + cells_across - 1]
                       for row in (0, 1) for column in (0, 1)], axis=3)
    epsilon = 1e-5  # L2-Hys, as skimage's _hog_normalize_block
    blocks = blocks / np.sqrt(np.sum(blocks ** 2, axis=(3, 4), keepdims=True) + epsilon ** 2)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt(np.sum(blocks ** 2, axis=(3, 4), keepdims=True) + epsilon ** 2)
    return blocks.reshape(len(x), -1).astype(np.float32)


def _gray(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W) gray, as OpenCV converts BGR."""
    import cv2

    if x.shape[-1] == 1:
        return x[..., 0]
    return np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in x])


def _on_threads(function, items) -> list:
    """`function` over `items`, on as many threads as this process may use (a sweep worker's
    $CAMP_THREADS) when there are enough items to be worth a pool."""
    items = list(items)
    threads = int(os.environ.get("CAMP_THREADS") or os.cpu_count() or 1)
    if threads > 1 and len(items) >= 32:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(function, items))
    return [function(item) for item in items]


def _hog_features_per_image(x: np.ndarray, cell: int, orientations: int) -> np.ndarray:
    """`hog_features` through scikit-image's public `hog`, one image at a time (the reference)."""
    from skimage.feature import hog

    def one(gray):
        return hog(gray, orientations=orientations, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
                   block_norm="L2-Hys", feature_vector=True)
    return np.asarray(_on_threads(one, _gray(x)), dtype=np.float32)


class FeatureMemo:
    """HOG features of the last `size` batches, keyed by the batch's content and the HOG knobs. A served
    ensemble gives one to all its HOG members: those that share their preprocessing and HOG shape (TPE
    often proposes one shape with several C) then compute the features once per request, not once each."""

    def __init__(self, size: int = 2):
        self.size, self._entries, self._lock = size, OrderedDict(), threading.Lock()

    def features(self, x: np.ndarray, cell: int, orientations: int) -> np.ndarray:
        x = np.ascontiguousarray(x)
        key = (x.shape, x.dtype.str, cell, orientations, hashlib.blake2b(x.data, digest_size=16).digest())
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = hog_features(x, cell, orientations)
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value


class HogLinear:
    """HOG features -> standardised -> logistic regression; `predict` returns class probabilities."""

    def __init__(self, cell: int, orientations: int, c: float, n_classes: int, balanced: bool, seed: int):
        self.cell, self.orientations, self.c = cell, orientations, c
        self.n_classes, self.balanced, self.seed = n_classes, balanced, seed
        self.pipeline = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> "HogLinear":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.pipeline = make_pipeline(StandardScaler(), LogisticRegression(
            C=self.c, max_iter=2000, class_weight="balanced" if self.balanced else None, random_state=self.seed))
        self.pipeline.fit(hog_features(x, self.cell, self.orientations), y)
        return self

    def predict(self, x: np.ndarray, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        """Probabilities (N, n_classes), columns in label order even if a class was absent in training."""
        if self.pipeline is None:
            raise ValueError("HogLinear.predict before fit")
        memo = getattr(self, "memo", None)  # set by a served ensemble (FeatureMemo); never saved
        features = (memo.features if memo is not None else hog_features)(x, self.cell, self.orientations)
        known = self.pipeline.predict_proba(features)
        probabilities = np.zeros((len(x), self.n_classes), np.float32)
        probabilities[:, self.pipeline.classes_] = known
        return probabilities

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "memo"}

    def save(self, directory: Path) -> None:
        (Path(directory) / MODEL_FILE).write_bytes(pickle.dumps(self))


def load(directory: Path) -> HogLinear:
    """A saved HogLinear. Only camp's own bundles are loaded this way (a pickle runs code)."""
    return pickle.loads((Path(directory) / MODEL_FILE).read_bytes())


def fit_hog_linear(x_train: np.ndarray, y_train: np.ndarray, n_classes: int, model_config, seed: int) -> HogLinear:
    return HogLinear(model_config.hog_cell, model_config.hog_orientations, model_config.hog_c, n_classes,
                     balanced=model_config.loss_weighting != "none", seed=seed).fit(x_train, y_train)
