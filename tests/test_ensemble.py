"""camp.ensemble: Caruana selection and top-k on validation probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from camp.ensemble import average, score, select


def _one_hot(predicted, classes=3, confidence=0.8):
    probabilities = np.full((len(predicted), classes), (1 - confidence) / (classes - 1))
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_caruana_combines_models_that_err_on_different_images():
    y = np.array([0, 1, 2] * 10)
    candidates = []
    for number, wrong in enumerate((slice(0, 10), slice(10, 20), slice(20, 30))):  # each wrong on another third
        probabilities = _one_hot(y, confidence=0.6 + 0.01 * number)
        rows = np.arange(30)[wrong]
        probabilities[rows] = 0.2
        probabilities[rows, (y[rows] + 1) % 3] = 0.45  # unsure when wrong, as real models tend to be
        probabilities[rows, y[rows]] = 0.35
        candidates.append(probabilities)
    selection = select(y, candidates, "val/macro_f1", maximize=True, method="caruana", max_members=3)
    assert len(selection.members) >= 2
    assert selection.value == pytest.approx(1.0)
    assert selection.best_single_value < 0.8 and sum(selection.weights) == pytest.approx(1.0)
    capped = select(y, candidates, "val/macro_f1", maximize=True, method="caruana", max_members=1)
    assert len(capped.members) == 1 and capped.value == pytest.approx(capped.best_single_value)


def test_a_budget_limits_which_member_sets_are_considered():
    """camp.serving_cost's floor as `affordable`: no member set it refuses is chosen, and the best single
    candidate is the best one admitted."""
    y = np.array([0, 1, 2] * 10)
    candidates = []
    for number, wrong in enumerate((slice(0, 10), slice(10, 20), slice(20, 30))):
        probabilities = _one_hot(y, confidence=0.6 + 0.01 * number)
        rows = np.arange(30)[wrong]
        probabilities[rows] = 0.2
        probabilities[rows, (y[rows] + 1) % 3] = 0.45
        probabilities[rows, y[rows]] = 0.35
        candidates.append(probabilities)
    seen = []

    def two_at_most(members):
        seen.append(members)
        return len(members) <= 2
    for method in ("caruana", "top_k"):
        budgeted = select(y, candidates, "val/macro_f1", maximize=True, method=method, max_members=3,
                          affordable=two_at_most)
        assert 1 <= len(budgeted.members) <= 2
    assert all(isinstance(members, frozenset) for members in seen)
    not_the_best = select(y, candidates, "val/macro_f1", maximize=True, max_members=3,
                          affordable=lambda members: 0 not in members)
    assert not_the_best.best_single != 0 and 0 not in not_the_best.members
    with pytest.raises(ValueError, match="admits none"):
        select(y, candidates, "val/macro_f1", maximize=True, affordable=lambda members: False)


def test_caruana_never_scores_below_the_best_single_model():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 60)
    candidates = [rng.dirichlet(np.ones(4), 60) for _ in range(5)]
    candidates[2][np.arange(60), y] += 0.5  # one clearly good model
    selection = select(y, candidates, "val/macro_f1", maximize=True, max_members=3)
    assert selection.value >= selection.best_single_value
    assert selection.best_single == 2 and len(selection.members) <= 3


def test_identical_candidates_give_one_member_and_top_k_takes_the_k_best():
    y = np.array([0, 1, 1, 0])
    same = _one_hot(np.array([0, 1, 0, 0]), classes=2)
    assert select(y, [same, same.copy()], "val/macro_f1", True).members == [0]
    better = _one_hot(y, classes=2)
    top = select(y, [same, better, same.copy()], "val/macro_f1", True, method="top_k", max_members=2)
    assert top.members[0] == 1 and len(top.members) == 2 and top.weights == [0.5, 0.5]


def test_loss_is_minimised():
    y = np.array([0, 1])
    sure, unsure = _one_hot(y, 2, 0.99), _one_hot(y, 2, 0.6)
    selection = select(y, [unsure, sure], "val/loss", maximize=False)
    assert selection.members == [1] and selection.value == pytest.approx(score(y, sure, "val/loss"))


def test_bad_candidates_are_refused_and_average_keeps_unreadable_rows_nan():
    with pytest.raises(ValueError, match="at least one"):
        select(np.array([0]), [], "val/macro_f1", True)
    with pytest.raises(ValueError, match="shape"):
        select(np.array([0, 1]), [np.ones((2, 3)), np.ones((3, 3))], "val/macro_f1", True)
    a = np.array([[0.2, 0.8], [np.nan, np.nan]])
    b = np.array([[0.6, 0.4], [0.5, 0.5]])
    combined = average([a, b], [3, 1])
    assert np.allclose(combined[0], [0.3, 0.7]) and np.isnan(combined[1]).all()


def test_the_numpy_macro_f1_is_scikit_learns():
    from sklearn.metrics import f1_score

    from camp.ensemble import _macro_f1

    rng = np.random.default_rng(0)
    for _ in range(300):  # labels missing from y, from the predictions, or from both
        classes = int(rng.integers(1, 6))
        y = rng.integers(0, classes, int(rng.integers(1, 40)))
        predicted = rng.integers(0, classes + 1, len(y))
        assert _macro_f1(y, predicted) == pytest.approx(f1_score(y, predicted, average="macro", zero_division=0))


def _chooser(y, candidates):
    """Caruana on the given images, as finalize would choose: a procedure for split_half_estimate."""
    def procedure(indices):
        selection = select(y[indices], [c[indices] for c in candidates], "val/macro_f1", True, "caruana", 5, 20)
        return lambda other: average([candidates[m][other] for m in selection.members], selection.weights)
    return procedure


def test_the_split_half_estimate_is_not_fooled_by_selecting_among_noise():
    from camp.ensemble import split_half_estimate

    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    candidates = [rng.dirichlet(np.ones(5), len(y)) for _ in range(12)]  # no candidate knows anything
    in_sample = select(y, candidates, "val/macro_f1", True, "caruana", 5, 20).value
    heldout, error = split_half_estimate(y, _chooser(y, candidates), "val/macro_f1", splits=10)
    assert abs(heldout - 0.2) < 0.03 and error < 0.01  # chance, for 5 balanced labels
    assert in_sample > heldout + 0.04  # choosing and scoring on the same images flatters the choice


def test_the_split_half_estimate_of_a_real_signal_is_near_its_score_and_halves_keep_every_label():
    from camp.ensemble import split_half_estimate

    y = np.array([0] * 6 + [1] * 40 + [2] * 7)
    good = _one_hot(y)
    good[::5] = _one_hot((y[::5] + 1) % 3)  # wrong on every fifth image
    seen = []

    def procedure(indices):
        seen.append(indices)
        return _chooser(y, [good, _one_hot(np.zeros_like(y))])(indices)
    heldout, _ = split_half_estimate(y, procedure, "val/macro_f1", splits=5, seed=3)
    assert len(seen) == 10
    for indices in seen:  # each label split evenly between the halves
        counts = np.bincount(y[indices], minlength=3)
        assert all(abs(2 * count - total) <= 1 for count, total in zip(counts, np.bincount(y)))
    assert heldout == pytest.approx(score(y, good, "val/macro_f1"), abs=0.1)
    with pytest.raises(ValueError, match="splits >= 1"):
        split_half_estimate(y, procedure, "val/macro_f1", splits=0)
