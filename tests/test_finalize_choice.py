"""camp.finalize_choice on synthetic probabilities: the augmentation rule, the augmentation options, and
the held-out estimate that repeats the whole choice (with its cascade) on images it did not choose on."""

from __future__ import annotations

import numpy as np
import pytest


def _selection(value, best_single_value, members=(0, 1)):
    from camp import ensemble

    return ensemble.Selection(list(members), [1 / len(members)] * len(members), value, members[0], best_single_value)


def test_auto_tta_takes_the_flip_only_where_it_scores_better():
    from camp import finalize_choice
    from camp.config import FinalizeConfig

    auto = FinalizeConfig(ensemble="caruana", tta="auto")
    better_flip = {"none": _selection(0.80, 0.78), "flip": _selection(0.82, 0.79)}
    assert finalize_choice._choose(better_flip, auto, "maximize")[0] == "flip"
    worse_flip = {"none": _selection(0.80, 0.78), "flip": _selection(0.79, 0.79)}
    assert finalize_choice._choose(worse_flip, auto, "maximize")[0] == "none"
    tie = {"none": _selection(0.80, 0.80), "flip": _selection(0.80, 0.80)}
    assert finalize_choice._choose(tie, auto, "maximize")[0] == "none"  # ties keep the cheaper model
    # a min_gain the ensemble does not clear compares the best single models instead
    gated = FinalizeConfig(ensemble="caruana", tta="auto", min_gain=0.05)
    assert finalize_choice._choose({"none": _selection(0.80, 0.77), "flip": _selection(0.81, 0.79)}, gated, "maximize")[0] == "flip"
    assert finalize_choice._choose({"none": _selection(0.80, 0.78), "flip": _selection(0.80, 0.76)}, gated, "maximize")[0] == "none"
    assert finalize_choice._choose(worse_flip, FinalizeConfig(tta="flip"), "maximize")[0] == "flip"
    assert finalize_choice._choose({"none": _selection(0.80, 0.78)}, auto, "maximize")[0] == "none"  # old trials: no flip


def test_tta_options_need_every_candidate_to_have_mirrored_predictions(capsys):
    from camp import finalize_choice

    class Trial:
        def __init__(self, number):
            self.number = number

    with_flip = {"probabilities": [[0.9, 0.1]], "probabilities_flip": [[0.7, 0.3]]}
    options = finalize_choice.tta_options([(Trial(0), with_flip)], "auto")
    np.testing.assert_allclose(options["flip"][0], [[0.7, 0.3]])
    np.testing.assert_allclose(options["none"][0], [[0.9, 0.1]])
    assert set(finalize_choice.tta_options([(Trial(0), with_flip)], "none")) == {"none"}
    old = {"probabilities": [[0.9, 0.1]]}
    assert set(finalize_choice.tta_options([(Trial(0), with_flip), (Trial(3), old)], "flip")) == {"none"}
    assert "[3]" in capsys.readouterr().out


def test_the_held_out_estimate_repeats_the_whole_choice_on_images_it_did_not_choose_on():
    """Augmentation, members and the ensemble-or-single rule are all chosen again on each half: among
    candidates that know nothing, the choice's own validation value flatters it and the estimate does not."""
    from camp import finalize_choice
    from camp.config import FinalizeConfig

    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 240)
    options = {tta: [rng.dirichlet(np.ones(5), len(y)) for _ in range(10)] for tta in ("none", "flip")}
    config = FinalizeConfig(ensemble="caruana", max_members=5, rounds=20, tta="auto", heldout_splits=10)
    _, selection, _, _ = finalize_choice.choose(y, options, config, "val/macro_f1", "maximize")
    heldout, error = finalize_choice.heldout_estimate(y, options, config, "val/macro_f1", "maximize")
    assert abs(heldout - 0.2) < 0.04 and error < 0.01
    assert selection.value > heldout + 0.05


def test_with_a_cascade_the_held_out_estimate_chooses_it_again_on_each_half(monkeypatch):
    """The version's held-out figure is of what it serves: the cascade is chosen on the same half as the
    members, and the other half is scored on what it answers."""
    from camp import cascade, finalize_choice
    from camp.config import FinalizeConfig

    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 240)
    sure = np.eye(5)[y] * 0.8 + 0.04  # right and confident on its half of the images, noise on the other
    halves = np.arange(len(y)) % 2 == 0
    first = np.where(halves[:, None], sure, rng.dirichlet(np.ones(5), len(y)))
    second = np.where(halves[:, None], rng.dirichlet(np.ones(5), len(y)), sure)
    options = {"none": [first, second]}
    config = FinalizeConfig(ensemble="top_k", max_members=2, tta="none", heldout_splits=3, cascade=0.9)
    seen = []
    real = cascade.choose
    monkeypatch.setattr(cascade, "choose", lambda gates, whole, agreement: seen.append((len(whole), agreement))
                        or real(gates, whole, agreement))
    with_cascade, _ = finalize_choice.heldout_estimate(y, options, config, "val/macro_f1", "maximize")
    # once per half chosen on, on that half only (halves are stratified by label, so 119-121 images each)
    assert len(seen) == 6 and {agreement for _, agreement in seen} == {0.9}
    assert all(seen[i][0] + seen[i + 1][0] == len(y) and 110 < seen[i][0] < 130 for i in (0, 2, 4))
    without, _ = finalize_choice.heldout_estimate(y, options, FinalizeConfig(ensemble="top_k", max_members=2, tta="none",
                                                                      heldout_splits=3), "val/macro_f1", "maximize")
    assert with_cascade != without


def test_cascade_of_is_none_without_a_cascade_or_a_second_member():
    from camp import cascade, finalize_choice

    rng = np.random.default_rng(4)
    plain = [rng.dirichlet(np.ones(5), 60) for _ in range(3)]
    whole = (plain[0] + plain[2]) / 2
    assert finalize_choice.cascade_of([0, 2], plain, whole, 0.0) is None
    assert finalize_choice.cascade_of([1], plain, plain[1], 0.9) is None
    chosen = finalize_choice.cascade_of([0, 2], plain, whole, 0.9)
    assert chosen == cascade.choose({0: plain[0], 1: plain[2]}, whole, 0.9)
    rows = np.arange(30)
    assert finalize_choice.cascade_of([0, 2], plain, whole[rows], 0.9, rows) == cascade.choose(
        {0: plain[0][rows], 1: plain[2][rows]}, whole[rows], 0.9)


def test_a_serving_floor_with_a_cascade_keeps_the_ensemble_and_lets_its_gate_answer_only_what_the_floor_needs():
    """Where the whole ensemble is too slow, a cascade that meets the floor keeps every member (the gate
    answering the least share that is fast enough); where none can, the floor's budget chooses the members."""
    from camp import ensemble, finalize_choice, serving_cost
    from camp.config import FinalizeConfig

    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 300)

    def candidate(truth_weight):
        return truth_weight * np.eye(5)[y] + (1 - truth_weight) * rng.dirichlet(np.ones(5), len(y))
    options = {"none": [candidate(0.35), candidate(0.35), candidate(0.1)]}
    # two CNNs at 2 ms a pass and a HOG model at 0.1 ms, one shared preprocessing at 0.5 ms
    costs = serving_cost.Costs(["p"] * 3, [0.002, 0.002, 0.0001], {"p": 0.0005})
    config = FinalizeConfig(ensemble="caruana", max_members=3, rounds=10, tta="none", cascade=0.9)
    free = finalize_choice.choose(y, options, config, "val/macro_f1", "maximize")
    members = free[1].members
    assert {0, 1} <= set(members) and costs.images_per_second(members, "none") < 300

    floor = serving_cost.floor(costs, 300, options, margin=1.0)
    chosen = finalize_choice.choose(y, options, config, "val/macro_f1", "maximize", floor)
    assert chosen[1].members == members and chosen[1].weights == free[1].weights
    whole = ensemble.average([options["none"][m] for m in members], free[1].weights)
    gated = finalize_choice.cascade_of(members, options["none"], whole, 0.9, floor=floor)
    gate = members[gated.gate]
    assert gated.exit_share >= floor.exit_share_needed(members, "none", gate) > 0.3
    assert costs.cascade_seconds(members, "none", gate, gated.exit_share) <= 1 / 300
    unbounded = finalize_choice.cascade_of(members, options["none"], whole, 0.9)  # as many as agreement allows
    assert unbounded.exit_share >= gated.exit_share and unbounded.agreement <= gated.agreement

    assert finalize_choice.cascade_of(members, options["none"], whole, 0.9,  # the whole ensemble meets 150
                                      floor=serving_cost.floor(costs, 150, options, margin=1.0)) is None
    strict = serving_cost.floor(costs, 1000, options, margin=1.0)  # 1 ms: no CNN gate is that fast alone
    assert finalize_choice.cascade_of(members, options["none"], whole, 0.9, floor=strict) is None
    constrained = finalize_choice.choose(y, options, config, "val/macro_f1", "maximize", strict)
    assert constrained[1].members == [2] and strict.meets(constrained[1].members, "none")
    heldout, _ = finalize_choice.heldout_estimate(y, options, FinalizeConfig(
        ensemble="caruana", max_members=3, rounds=10, tta="none", cascade=0.9, heldout_splits=3), "val/macro_f1",
        "maximize", floor)
    assert 0.2 < heldout <= 1.0


def test_where_no_cascade_reaches_the_floors_margin_one_that_meets_the_floor_itself_is_served():
    from camp import ensemble, finalize_choice, serving_cost

    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 300)
    plain = [0.6 * np.eye(5)[y] + 0.4 * rng.dirichlet(np.ones(5), len(y)) for _ in range(2)]
    whole = ensemble.average(plain, [0.5, 0.5])
    costs = serving_cost.Costs(["p"] * 2, [0.002, 0.002], {"p": 0.0005})  # whole 4.5 ms, a gate alone 2.5 ms
    exact = serving_cost.floor(costs, 300, {"none": plain}, margin=1.0)  # 3.33 ms: a gate answers 58% at least
    margined = serving_cost.floor(costs, 300, {"none": plain}, margin=1.5)  # aims at 450: no gate is that fast
    gated = finalize_choice.cascade_of([0, 1], plain, whole, 0.9, floor=margined)
    assert gated is not None and gated == finalize_choice.cascade_of([0, 1], plain, whole, 0.9, floor=exact)
    assert gated.exit_share >= 0.58
    # the whole ensemble meets the floor itself (4.5 ms < 4.55) where no cascade reaches the target: served whole
    assert finalize_choice.cascade_of([0, 1], plain, whole, 0.9,
                                      floor=serving_cost.floor(costs, 220, {"none": plain}, margin=2.0)) is None


def test_calibration_times_the_choice_and_scales_the_estimates_until_the_served_model_meets_the_target(capsys):
    """A model served 15% slower than its sum of parts: the cascade is chosen again with estimates scaled by
    what the timing showed, so its gate answers more; a model as fast as estimated is timed once, and one
    that is never fast enough `CALIBRATION_ROUNDS` times."""
    from camp import finalize_choice, serving_cost
    from camp.config import FinalizeConfig

    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 300)
    plain = [0.35 * np.eye(5)[y] + 0.65 * rng.dirichlet(np.ones(5), len(y)) for _ in range(2)]
    options = {"none": plain}
    costs = serving_cost.Costs(["p"] * 2, [0.002, 0.002], {"p": 0.0002})  # whole 4.2 ms, a gate alone 2.2 ms
    config = FinalizeConfig(ensemble="caruana", max_members=2, rounds=10, tta="none", cascade=0.9)
    assert len(finalize_choice.choose(y, options, config, "val/macro_f1", "maximize")[1].members) == 2
    start = serving_cost.floor(costs, 250, options, margin=1.0)
    calls = []

    def slower(members, weights, tta, gated):  # what the served model takes: 15% over the estimate
        calls.append(gated)
        return 1.15 * start.estimate(members, tta, gated)
    floor, timings = finalize_choice.calibrate(y, options, config, "val/macro_f1", "maximize", start, slower)
    assert len(timings) == 2 and floor.scale == pytest.approx(1.15)  # one timing teaches a steady ratio
    assert calls[0].exit_share < calls[1].exit_share
    assert timings[1]["served_images_per_second"] >= 250
    assert timings[0]["served_images_per_second"] == pytest.approx(timings[0]["estimated_images_per_second"] / 1.15,
                                                                   rel=1e-3)
    assert "served" in capsys.readouterr().out
    exact, timings = finalize_choice.calibrate(y, options, config, "val/macro_f1", "maximize", start,
                                               lambda members, weights, tta, gated: start.estimate(members, tta, gated))
    assert len(timings) == 1 and exact.scale == 1.0
    _, timings = finalize_choice.calibrate(y, options, config, "val/macro_f1", "maximize", start,
                                           lambda members, weights, tta, gated: 0.1)  # never fast enough
    assert len(timings) == finalize_choice.CALIBRATION_ROUNDS
