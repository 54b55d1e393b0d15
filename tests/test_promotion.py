"""The promotion gate (camp.promotion.gate): paired bootstraps against the trivial floors and the current
champion on the same validation images. Pure NumPy/SciPy: no model is trained here."""

from __future__ import annotations

import numpy as np
import pytest

from camp.config import PromotionConfig
from camp.promotion import gate

RULE = PromotionConfig(resamples=200)


def _labels(n: int = 200, classes: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _model(y: np.ndarray, accuracy: float, classes: int = 5, seed: int = 1) -> np.ndarray:
    """Probabilities that put the true label first on about `accuracy` of the items, else a random one."""
    rng = np.random.default_rng(seed)
    predicted = np.where(rng.random(len(y)) < accuracy, y, rng.integers(0, classes, len(y)))
    probabilities = np.full((len(y), classes), 0.1 / (classes - 1))
    probabilities[np.arange(len(y)), predicted] = 0.9
    return probabilities


def test_a_near_chance_model_is_never_promoted_even_as_the_first_champion():
    y = _labels()
    decision = gate("val/macro_f1", True, y, _model(y, 0.05), None, RULE)
    assert not decision["promote"]
    assert "does not beat" in decision["reason"] and "near-trivial" in decision["reason"]


def test_a_good_first_model_is_promoted_and_its_floor_gains_are_recorded():
    y = _labels()
    decision = gate("val/macro_f1", True, y, _model(y, 0.8), None, RULE)
    assert decision["promote"] and decision["reason"] == "first champion"
    assert set(decision["floors"]) == {"largest label", "chance"}
    assert all(floor["interval"][0] > 0 for floor in decision["floors"].values())


def test_a_tie_keeps_the_old_champion():
    y = _labels()
    champion = _model(y, 0.8)
    decision = gate("val/macro_f1", True, y, champion.copy(), champion, RULE)
    assert not decision["promote"] and decision["gain"] == 0.0
    assert "does not beat the champion" in decision["reason"]


def test_a_small_noisy_gain_is_not_enough_but_a_clear_one_is():
    y = _labels(n=300)
    champion = _model(y, 0.70, seed=1)
    slightly = champion.copy()
    flip = np.flatnonzero(slightly.argmax(axis=1) != y)[:2]  # two more right answers out of 300
    slightly[flip] = np.eye(5)[y[flip]]
    assert not gate("val/macro_f1", True, y, slightly, champion, RULE)["promote"]
    clearly = _model(y, 0.95, seed=2)
    decision = gate("val/macro_f1", True, y, clearly, champion, RULE)
    assert decision["promote"] and decision["interval"][0] > 0


def test_min_gain_replaces_the_interval_for_the_champion_but_not_for_the_floors():
    y = _labels(n=300)
    champion = _model(y, 0.70, seed=1)
    slightly = champion.copy()
    flip = np.flatnonzero(slightly.argmax(axis=1) != y)[:2]
    slightly[flip] = np.eye(5)[y[flip]]
    assert gate("val/macro_f1", True, y, slightly, champion, PromotionConfig(min_gain=0.001, resamples=200))["promote"]
    assert not gate("val/macro_f1", True, y, slightly, champion, PromotionConfig(min_gain=0.05, resamples=200))["promote"]
    assert not gate("val/macro_f1", True, y, _model(y, 0.05), None, PromotionConfig(min_gain=0.0, resamples=200))["promote"]


def test_a_loss_metric_counts_lower_as_better():
    y = _labels()
    good, worse = _model(y, 0.9), _model(y, 0.5)
    assert gate("val/loss", False, y, good, worse, RULE)["promote"]
    assert not gate("val/loss", False, y, worse, good, RULE)["promote"]


@pytest.mark.parametrize("key, value", [("confidence", 1.0), ("min_gain", -0.1), ("resamples", 10)])
def test_bad_promotion_settings_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=f"promotion.{key}"):
        PromotionConfig(**{key: value})
