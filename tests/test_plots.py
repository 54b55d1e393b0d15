"""camp.plots: the pictures camp writes are real PNGs of the asked content."""

from __future__ import annotations

import cv2
import numpy as np

from camp.plots import cached_picture, confusion_matrix_plot, counts_bar_chart, grid_key

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


def _draw(calls):
    def draw(path):
        calls.append(path)
        cv2.imwrite(str(path), np.full((20, 30, 3), len(calls) * 40, np.uint8))
        return path

    return draw


def test_cached_picture_draws_once_per_key_and_copies_it_to_each_asked_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMP_CACHE", str(tmp_path / "cache"))
    calls = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = cached_picture(tmp_path / "a" / "preprocessing.png", "key1", _draw(calls))
    second = cached_picture(tmp_path / "b" / "preprocessing.png", "key1", _draw(calls))
    assert calls == [first] and second.name == "preprocessing.png"
    assert second.read_bytes() == first.read_bytes()
    other = cached_picture(tmp_path / "b" / "other.png", "key2", _draw(calls))
    assert calls == [first, other]  # another key: drawn, not the first key's picture
    assert cv2.imread(str(other)).mean() != cv2.imread(str(first)).mean()


def test_cached_picture_still_draws_when_the_cache_cannot_be_written(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CAMP_CACHE", str(blocker))
    calls = []
    picture = cached_picture(tmp_path / "grid.png", "key", _draw(calls))
    assert calls == [picture] and cv2.imread(str(picture)) is not None
    assert "could not cache the picture" in capsys.readouterr().err


def test_grid_key_changes_with_what_the_grid_shows():
    base = grid_key("arrays-a", LABELS, 42)
    assert base == grid_key("arrays-a", list(LABELS), 42)
    assert len({base, grid_key("arrays-b", LABELS, 42), grid_key("arrays-a", LABELS, 43),
                grid_key("arrays-a", LABELS[::-1], 42)}) == 4
