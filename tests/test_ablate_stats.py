"""camp.ablate_stats: the fast metric agrees with scikit-learn; the two-level paired bootstrap and its
plain-words verdicts (a no-op difference is "no difference", a large one a winner, loss read the other way)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from camp.ablate_stats import knob_result, label_metric, paired_seeds, verdict


def _probabilities(predicted: np.ndarray, classes: int = 5) -> np.ndarray:
    return np.eye(classes)[predicted] * 0.8 + 0.04


@pytest.mark.parametrize("seed", range(5))
def test_label_metric_is_scikit_learns_macro_f1_and_accuracy(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 60)  # label 4 absent from y; sometimes predicted
    predicted = rng.integers(0, 5 - seed % 2, 60)
    assert label_metric("macro_f1", y, predicted, 5) == pytest.approx(f1_score(y, predicted, average="macro", zero_division=0))
    assert label_metric("accuracy", y, predicted, 5) == pytest.approx(np.mean(y == predicted))
    with pytest.raises(ValueError, match="loss"):
        label_metric("loss", y, predicted, 5)


def test_identical_predictions_show_no_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 100)
    seeds = [_probabilities(np.where(rng.random(100) < 0.7, y, rng.integers(0, 5, 100))) for _ in range(2)]
    difference, low, high = paired_seeds("val/macro_f1", y, seeds, [s.copy() for s in seeds], resamples=200)
    assert (difference, low, high) == (0.0, 0.0, 0.0)
    assert "no difference this data can show" in verdict("a", "b", difference, low, high, "maximize", "test/macro_f1")


def test_a_large_difference_is_a_verdict_whose_interval_excludes_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 120)
    good = [_probabilities(np.where(rng.random(120) < 0.9, y, rng.integers(0, 5, 120))) for _ in range(2)]
    bad = [_probabilities(rng.integers(0, 5, 120)) for _ in range(2)]
    difference, low, high = paired_seeds("val/macro_f1", y, good, bad, resamples=300)
    assert 0 < low <= difference <= high
    assert verdict("color", "gray", difference, low, high, "maximize", "test/macro_f1").startswith("color beats gray by")
    assert verdict("gray", "color", -difference, -high, -low, "maximize", "m").startswith("color beats gray by")


def test_for_a_loss_the_lower_value_wins():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 80)
    confident, vague = [np.eye(5)[y] * 0.9 + 0.02], [np.full((80, 5), 0.2)]
    difference, low, high = paired_seeds("val/loss", y, confident, vague, resamples=200)
    assert high < 0  # confident-and-right has the lower loss
    assert verdict("confident", "vague", difference, low, high, "minimize", "test/loss").startswith("confident beats vague")


def test_seed_noise_widens_the_interval():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 150)
    noisy = [_probabilities(np.where(rng.random(150) < accuracy, y, rng.integers(0, 5, 150))) for accuracy in (0.9, 0.5)]
    steady = [_probabilities(np.where(rng.random(150) < 0.7, y, rng.integers(0, 5, 150)))] * 2
    _, low_one, high_one = paired_seeds("val/macro_f1", y, noisy[:1] * 2, steady, resamples=300)
    _, low_two, high_two = paired_seeds("val/macro_f1", y, noisy, steady, resamples=300)
    assert high_two - low_two > high_one - low_one


def test_knob_result_tables_each_value_and_pairs_them():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 90)
    outputs = {(value, replica): {split: (y, _probabilities(np.where(rng.random(90) < accuracy, y, rng.integers(0, 5, 90))))
                                  for split in ("validation", "test")}
               for value, accuracy in (("gray", 0.95), ("color", 0.3)) for replica in (0, 1)}
    result = knob_result("preprocess.mode", ["gray", "color"], outputs, list("abcde"), "val/macro_f1", "maximize",
                         "test", resamples=200)
    assert [row["value"] for row in result["rows"]] == ["gray", "color"] and result["rows"][0]["seeds"] == 2
    assert result["rows"][0]["test"] > result["rows"][1]["test"] and set(result["rows"][0]["recall"]) == set("abcde")
    (pair,) = result["pairs"]
    assert pair["first"] == "gray" and pair["interval"][0] > 0 and pair["verdict"].startswith("gray beats color")
