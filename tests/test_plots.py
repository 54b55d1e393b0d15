"""camp.plots: the pictures camp writes are real PNGs of the asked content."""

from __future__ import annotations

import cv2
import numpy as np

from camp.plots import confusion_matrix_plot, counts_bar_chart

LABELS = ["cap_and_hat", "outerwear", "tops", "bottoms", "shoes"]


def test_counts_bar_chart_and_confusion_matrix_are_readable_pngs(tmp_path):
    counts = {"train": dict(zip(LABELS, [10, 20, 80, 30, 25])), "validation": dict(zip(LABELS, [2, 3, 9, 4, 3]))}
    chart = counts_bar_chart(counts, tmp_path / "counts.png", "Images per label and split")
    matrix = np.diag([5, 6, 7, 8, 9]) + 1
    confusion = confusion_matrix_plot(matrix, LABELS, tmp_path / "confusion.png", "Validation confusion matrix")
    for path in (chart, confusion):
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 300, path
        assert image.std() > 10  # drawn, not blank
