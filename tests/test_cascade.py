"""camp.cascade: the gate's threshold is the lowest that keeps the ensemble's labels on the share asked for,
never splits tied confidences, and the gate answering the most images is chosen; a bad spec names its file."""

from __future__ import annotations

import numpy as np
import pytest

from camp import cascade


def _gate(confidences, labels, classes=3):
    """Gate probabilities whose top class is `labels` with top probability `confidences`."""
    rows = []
    for confidence, label in zip(confidences, labels):
        row = np.full(classes, (1.0 - confidence) / (classes - 1))
        row[label] = confidence
        rows.append(row)
    return np.array(rows)


def test_the_threshold_is_the_lowest_that_changes_no_more_labels_than_allowed():
    ensemble_labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    # by confidence: agree, agree, DISAGREE, agree, agree, DISAGREE, ...
    confidences = [0.99, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55]
    gate_labels = ensemble_labels.copy()
    gate_labels[[2, 5]] = (ensemble_labels[[2, 5]] + 1) % 3
    gate = _gate(confidences, gate_labels)
    # the threshold lies midway between the last image that exits and the next one
    assert cascade.threshold_for(gate, ensemble_labels, 1.0) == (pytest.approx(0.925), 2)  # none may change
    assert cascade.threshold_for(gate, ensemble_labels, 0.9) == (pytest.approx(0.775), 5)  # one of ten may
    assert cascade.threshold_for(gate, ensemble_labels, 0.8) == (pytest.approx(0.5495), 10)  # two: all exit
    assert cascade.threshold_for(_gate([0.9], [1]), np.array([0]), 0.99) is None  # its surest image is wrong


def test_images_tied_at_the_threshold_all_exit_so_a_threshold_never_splits_a_tie():
    ensemble_labels = np.array([0, 0, 0, 0])
    gate = _gate([0.9, 0.8, 0.8, 0.7], [0, 0, 1, 0])  # the second 0.8 disagrees
    threshold, answered = cascade.threshold_for(gate, ensemble_labels, 1.0)
    assert (threshold, answered) == (pytest.approx(0.85), 1)  # under 0.8 the disagreeing tie would exit too
    assert cascade.exits(gate, threshold).sum() == answered


def test_choose_takes_the_gate_that_answers_most_and_combine_serves_its_answers():
    ensemble_probabilities = _gate([0.6] * 6, [0, 1, 2, 0, 1, 2])
    # each is wrong where it is unsure: the timid gate on five images, the bold one on two
    timid = _gate([0.9, 0.4, 0.4, 0.4, 0.4, 0.4], [0, 2, 0, 1, 2, 0])
    bold = _gate([0.9, 0.9, 0.9, 0.9, 0.5, 0.4], [0, 1, 2, 0, 2, 0])
    chosen = cascade.choose({0: timid, 1: bold}, ensemble_probabilities, 1.0)
    assert chosen.gate == 1 and chosen.threshold == pytest.approx(0.7) and chosen.exit_share == pytest.approx(4 / 6)
    assert chosen.agreement == 1.0
    served = cascade.combine(bold, ensemble_probabilities, chosen.threshold)
    np.testing.assert_allclose(served[:4], bold[:4])
    np.testing.assert_allclose(served[4:], ensemble_probabilities[4:])
    wrong = _gate([0.9] * 6, [1, 2, 0, 1, 2, 0])
    assert cascade.choose({0: wrong}, ensemble_probabilities, 1.0) is None
    with pytest.raises(ValueError, match="min_agreement"):
        cascade.choose({0: bold}, ensemble_probabilities, 0.0)


def test_unreadable_rows_never_exit():
    gate = np.array([[0.9, 0.1], [np.nan, np.nan]])
    assert list(cascade.exits(gate, 0.5)) == [True, False]


@pytest.mark.parametrize("spec, message", [
    ({"threshold": 0.5}, "needs a member index"),
    ({"gate": 2, "threshold": 0.5}, r"member index in \[0, 2\)"),
    ({"gate": True, "threshold": 0.5}, "member index"),
    ({"gate": 0, "threshold": 1.5}, r"threshold must be in \(0, 1\]"),
    ({"gate": 0, "threshold": "high"}, "needs a member index"),
])
def test_a_bad_spec_names_its_file(spec, message):
    with pytest.raises(ValueError, match=f"ensemble.json: cascade.*{message}|{message}") as raised:
        cascade.from_spec(spec, 2, "bundle/ensemble.json")
    assert "bundle/ensemble.json" in str(raised.value)
    assert cascade.from_spec(None, 2, "x") is None
    kept = cascade.from_spec({"gate": 1, "threshold": 0.7, "exit_share": 0.5, "agreement": 0.99}, 2, "x")
    assert kept.spec() == {"gate": 1, "threshold": 0.7, "exit_share": 0.5, "agreement": 0.99}


def test_a_floors_cascade_answers_just_the_share_it_needs_with_the_gate_that_changes_fewest_labels():
    ensemble_labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    confidences = [0.99, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55]
    gate_labels = ensemble_labels.copy()
    gate_labels[[2, 5]] = (ensemble_labels[[2, 5]] + 1) % 3  # its 3rd and 6th surest images disagree
    gate = _gate(confidences, gate_labels)
    # the highest threshold answering the share: 30% is three images, one of them changed
    assert cascade.threshold_at_least(gate, ensemble_labels, 0.3, 0.9) == (pytest.approx(0.875), 3, 1)
    assert cascade.threshold_at_least(gate, ensemble_labels, 0.2, 1.0) == (pytest.approx(0.925), 2, 0)
    assert cascade.threshold_at_least(gate, ensemble_labels, 0.3, 1.0) is None  # three images change one label
    assert cascade.threshold_at_least(gate, ensemble_labels, 0.0, 1.0)[1] == 1  # a cascade answers one image at least
    assert cascade.threshold_at_least(gate, ensemble_labels, 1.0, 0.8) == (pytest.approx(0.5495), 10, 2)

    # with shares to answer, the gate changing fewest labels there wins, not the one answering most
    ensemble_probabilities = _gate([0.6] * 6, [0, 1, 2, 0, 1, 2])
    timid = _gate([0.9, 0.8, 0.4, 0.4, 0.4, 0.4], [0, 1, 0, 1, 2, 0])
    bold = _gate([0.9, 0.9, 0.9, 0.9, 0.5, 0.4], [0, 1, 2, 0, 2, 0])
    assert cascade.choose({0: timid, 1: bold}, ensemble_probabilities, 1.0).gate == 1  # answers most
    chosen = cascade.choose({0: timid, 1: bold}, ensemble_probabilities, 1.0, {0: 2 / 6, 1: 2 / 6})
    assert chosen.gate == 0 and chosen.exit_share == pytest.approx(2 / 6) and chosen.agreement == 1.0  # tie: fewer
    chosen = cascade.choose({0: timid, 1: bold}, ensemble_probabilities, 1.0, {0: 3 / 6, 1: 3 / 6})
    assert chosen.gate == 1 and chosen.threshold == pytest.approx(0.7)  # all four at 0.9 exit together
    assert cascade.choose({0: timid, 1: bold}, ensemble_probabilities, 1.0, {0: 3 / 6}) is None  # gate 1 not asked
    assert cascade.choose({0: timid, 1: bold}, ensemble_probabilities, 1.0, {1: 5 / 6}) is None  # changes a label
