"""camp.serving_cost: an ensemble's estimated cost adds its members' model costs per view and each distinct
preprocessing once; the floor drops what no candidate can afford and, if nothing can, admits the cheapest."""

from __future__ import annotations

import pytest

from camp.serving_cost import Costs, budgets


def _costs():
    # candidates 0 and 1 are CNNs on preprocessing "a" (2 ms and 3 ms per pass), 2 a HOG model on "b" (0.5 ms);
    # decoding and preprocessing cost 1 ms per image for "a", 0.5 ms for "b"
    return Costs(preprocess_of=["a", "a", "b"], model_seconds=[0.002, 0.003, 0.0005],
                 preprocess_seconds={"a": 0.001, "b": 0.0005})


def test_an_ensembles_estimate_pays_each_preprocessing_once_and_each_model_per_view():
    costs = _costs()
    assert costs.seconds({0}, "none") == pytest.approx(0.003)
    assert costs.seconds({0, 1}, "none") == pytest.approx(0.001 + 0.005)  # "a" decoded once for both
    assert costs.seconds({0, 1, 2}, "flip") == pytest.approx(0.0015 + 2 * 0.0055)
    assert costs.seconds([0, 0, 1], "none") == costs.seconds({0, 1}, "none")  # a repeated member runs once
    assert costs.images_per_second({0}, "none") == pytest.approx(1 / 0.003)


def test_the_floor_admits_only_member_sets_that_meet_it():
    costs, options = _costs(), {"none": ["p0", "p1", "p2"], "flip": ["f0", "f1", "f2"]}
    affordable, kept, notes = budgets(costs, 250, options)  # 4 ms per image
    assert set(kept) == {"none", "flip"} and not notes
    assert affordable["none"]({0}) and not affordable["none"]({0, 1}) and affordable["none"]({0, 2})
    assert not affordable["flip"]({0}) and affordable["flip"]({2})  # a CNN twice: 5 ms; the HOG model twice: 1.5 ms

    affordable, kept, notes = budgets(costs, 300, {"none": options["none"]})  # 3.3 ms: one CNN at most
    assert affordable["none"]({0}) and not affordable["none"]({1})


def test_an_augmentation_no_candidate_can_afford_is_dropped_and_an_impossible_floor_admits_the_cheapest():
    costs, options = _costs(), {"none": ["p0", "p1", "p2"], "flip": ["f0", "f1", "f2"]}
    affordable, kept, notes = budgets(costs, 800, options)  # 1.25 ms: the HOG model without flip (1 ms) only
    assert set(kept) == {"none"} and "flip test-time augmentation" in notes[0]
    assert affordable["none"]({2}) and not affordable["none"]({0})
    affordable, kept, notes = budgets(costs, 5000, options)  # 0.2 ms: nothing
    assert set(kept) == {"none"} and affordable["none"]({2}) and not affordable["none"]({0, 2})
    assert "the cheapest one" in notes[-1]
