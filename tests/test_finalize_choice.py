"""camp.finalize_choice on synthetic probabilities: the augmentation rule, the augmentation options, and
the held-out estimate that repeats the whole choice (with its cascade) on images it did not choose on."""

from __future__ import annotations

import numpy as np


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
