"""camp.metrics: metric values as scikit-learn computes them, bootstrap intervals (scipy), trivial floors."""

from __future__ import annotations

import numpy as np
import pytest

from camp import metrics


def test_recomputed_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)  # label 4 never appears: macro-F1 averages over the labels present
    predicted = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    probabilities = rng.dirichlet(np.ones(5), 200)
    assert metrics.value("val/macro_f1", y, predicted, probabilities) == pytest.approx(f1_score(y, predicted, average="macro"))
    assert metrics.value("val/accuracy", y, predicted, probabilities) == pytest.approx(accuracy_score(y, predicted))
    assert metrics.value("val/loss", y, predicted, probabilities) == pytest.approx(
        log_loss(y, probabilities, labels=range(5)), rel=1e-6)
    assert metrics.value("test/accuracy", y, probabilities=probabilities) == accuracy_score(y, probabilities.argmax(1))
    with pytest.raises(ValueError, match="val/loss needs probabilities"):
        metrics.value("val/loss", y, predicted)
    with pytest.raises(ValueError, match="unknown metric 'val/auc'"):
        metrics.value("val/auc", y, predicted)


def test_bootstrap_interval_brackets_the_value_and_narrows_with_more_items():
    rng = np.random.default_rng(1)

    def interval(n):
        y = rng.integers(0, 3, n)
        predicted = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
        value = metrics.value("val/accuracy", y, predicted)
        low, high = metrics.bootstrap_interval("val/accuracy", y, predicted, resamples=500)
        assert low <= value <= high
        return high - low

    assert interval(2000) < interval(100) / 2


def test_paired_difference_interval():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    good, bad = np.where(rng.random(300) < 0.9, y, (y + 1) % 3), np.where(rng.random(300) < 0.5, y, (y + 2) % 3)
    assert metrics.paired_bootstrap("val/accuracy", y, good, good, 200) == (0.0, 0.0, 0.0)
    difference, low, high = metrics.paired_bootstrap("val/macro_f1", y, good, bad, 200)
    assert difference == pytest.approx(metrics.value("val/macro_f1", y, good) - metrics.value("val/macro_f1", y, bad))
    assert 0 < low < difference < high


def test_trivial_floors():
    y = np.array([0, 0, 0, 1, 2, 2])
    floors = metrics.trivial_predictions("val/macro_f1", y, 4)
    assert floors["largest label"].tolist() == [0] * 6
    assert set(floors["chance"].tolist()) <= {0, 1, 2, 3} and len(floors["chance"]) == 6
    frequencies = metrics.trivial_predictions("val/loss", y, 4)["label frequencies"]
    assert frequencies.shape == (6, 4) and frequencies[0].tolist() == [0.5, 1 / 6, 1 / 3, 0.0]
    entropy = -(0.5 * np.log(0.5) + np.log(1 / 6) / 6 + np.log(1 / 3) / 3)
    assert metrics.value("val/loss", y, probabilities=frequencies) == pytest.approx(entropy)
