"""The promotion gate (camp.promotion.gate): paired bootstraps against the trivial floors and the current
champion on the same validation images. Pure NumPy/SciPy: no model is trained here."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from camp import names
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


class _Registry:
    """A stand-in for MLflow's registry: one champion (v1) with the given data fingerprint."""

    def __init__(self, fingerprint: str):
        self.champion = SimpleNamespace(version="1", tags={names.DATA_FINGERPRINT: fingerprint, names.RUN_ID: "r1"})
        self.alias = "1"

    def __call__(self):  # mlflow.MlflowClient()
        return self

    def get_model_version_by_alias(self, name, alias):
        return self.champion

    def set_model_version_tag(self, *args):
        pass

    def set_registered_model_alias(self, name, alias, version):
        self.alias = version


@pytest.mark.parametrize("champion_fingerprint, promoted", [("fp-new", False), ("fp-old", True)])
def test_the_champion_is_rescored_on_the_candidates_data_when_their_fingerprints_differ(
        champion_fingerprint, promoted, monkeypatch):
    """Issue 16 (3): the champion's logged predictions are reused only on the data they were made on. Its
    logged ones here are perfect (on another dataset of the same file names); on the candidate's data it
    is poor. A gate that used the stale predictions would keep it; the rescored ones let the candidate in."""
    import mlflow

    from camp import promotion

    y = _labels()
    relpaths = [f"validation/x/{i}.jpg" for i in range(len(y))]
    perfect = np.eye(5)[y] * 0.9 + 0.02
    candidate = {"relpaths": relpaths, "y_true": y.tolist(), "probabilities": _model(y, 0.9).tolist()}
    stale = {"relpaths": relpaths, "y_true": y.tolist(), "probabilities": perfect.tolist()}
    rescored = {"relpaths": relpaths, "y_true": y.tolist(), "probabilities": _model(y, 0.3, seed=5).tolist()}
    registry, rescored_uris = _Registry(champion_fingerprint), []
    monkeypatch.setattr(mlflow, "MlflowClient", registry)
    monkeypatch.setattr(mlflow, "register_model", lambda uri, name, tags: SimpleNamespace(version="2"))
    monkeypatch.setattr(promotion, "evaluate_version", lambda *args: None)
    monkeypatch.setattr(promotion, "run_predictions", lambda run_id, split: stale)
    monkeypatch.setattr(promotion, "validation_outputs", lambda uri, config, split: rescored_uris.append(uri) or rescored)
    config = SimpleNamespace(metric="val/macro_f1", direction="maximize")
    _, moved = promotion.register_and_promote("runs:/r2/model", "r2", 0.8, config, "fp-new", log=lambda *_: None,
                                              predictions=candidate, rule=RULE)
    assert moved is promoted and registry.alias == ("2" if promoted else "1")
    assert rescored_uris == ([] if champion_fingerprint == "fp-new" else ["models:/camp-classifier@champion"])
