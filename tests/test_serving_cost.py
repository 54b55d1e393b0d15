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


def test_a_cascade_pays_every_preprocessing_and_the_gates_pass_for_all_images_the_rest_for_those_it_passes_on():
    from camp.serving_cost import floor

    costs = _costs()
    # members 0 and 2 with flip, gate 2 (HOG): 1.5 ms preprocessing + 0.5 ms gate, then 2 x 2 + 0.5 ms for the rest
    assert costs.cascade_seconds({0, 2}, "flip", 2, 0.0) == pytest.approx(costs.seconds({0, 2}, "flip"))
    assert costs.cascade_seconds({0, 2}, "flip", 2, 1.0) == pytest.approx(0.002)
    assert costs.cascade_seconds({0, 2}, "flip", 2, 0.6) == pytest.approx(0.002 + 0.4 * 0.0045)
    options = {"none": ["p0", "p1", "p2"], "flip": ["f0", "f1", "f2"]}
    assert floor(costs, 100, options, 1.0).exit_share_needed({0, 2}, "flip", 2) == 0.0  # 6.5 ms whole meets 10 ms
    needed = floor(costs, 250, options, 1.0).exit_share_needed({0, 2}, "flip", 2)  # 4 ms: (6.5 - 4) / 4.5 answered
    assert needed == pytest.approx(2.5 / 4.5)
    assert costs.cascade_seconds({0, 2}, "flip", 2, needed) == pytest.approx(0.004)
    assert floor(costs, 250, options, 1.0).exit_share_needed({0, 2}, "flip", 0) == pytest.approx((6.5 - 4) / (6.5 - 3.5))
    assert floor(costs, 300, options, 1.0).exit_share_needed({0, 2}, "flip", 0) is None  # the CNN gate alone: 3.5 ms
    assert floor(costs, 250, options, 1.0).meets({2}, "flip") and not floor(costs, 250, options, 1.0).meets({0, 2}, "flip")
    margined = floor(costs, 250, options)  # aims 20% above: 300 images/s, where the CNN gate is too slow
    assert margined.target == pytest.approx(300) and margined.exit_share_needed({0, 2}, "flip", 0) is None
    assert floor(costs, 300, options, 1.0).meets({0}, "none") and not floor(costs, 300, options).meets({0}, "none")


def test_hog_members_of_one_feature_shape_pay_for_their_features_once():
    costs = Costs(preprocess_of=["a", "a", "a"], model_seconds=[0.002, 0.001, 0.0012],
                  preprocess_seconds={"a": 0.001}, features_of=[None, ("a", 8, 9), ("a", 8, 9)])
    assert costs.seconds({1, 2}, "none") == pytest.approx(0.001 + 0.0012)  # one HOG shape: the dearer reading
    assert costs.seconds({0, 1, 2}, "flip") == pytest.approx(0.001 + 2 * (0.002 + 0.0012))
    assert costs.cascade_seconds({0, 1, 2}, "none", 0, 0.5) == pytest.approx(0.001 + 0.002 + 0.5 * 0.0012)
    apart = Costs(["a", "a", "a"], [0.002, 0.001, 0.0012], {"a": 0.001}, [None, ("a", 8, 9), ("a", 6, 9)])
    assert apart.seconds({1, 2}, "none") == pytest.approx(0.001 + 0.0022)


def test_a_floor_tries_its_target_then_the_floor_itself():
    from camp.serving_cost import floor

    options = {"none": ["p0", "p1", "p2"]}
    levels = floor(_costs(), 250, options).levels()
    assert [level.target for level in levels] == [pytest.approx(300), pytest.approx(250)]
    assert [level.target for level in floor(_costs(), 250, options, 1.0).levels()] == [pytest.approx(250)]
