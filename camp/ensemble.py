"""Ensemble selection over trials' validation probabilities: Caruana et al.'s greedy forward selection
with replacement (a member picked twice weighs double), or the plain top-k. Pure NumPy: the sweep's
finalize step feeds it each complete trial's `val_predictions.json`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from camp import metrics, names


@dataclasses.dataclass
class Selection:
    """Chosen members (indices into the candidates) with weights summing to 1, and the ensemble's and
    the best single candidate's validation value."""

    members: list[int]
    weights: list[float]
    value: float
    best_single: int
    best_single_value: float


def score(y: np.ndarray, probabilities: np.ndarray, metric: str) -> float:
    """`metric` (val/macro_f1, val/accuracy or val/loss) of averaged probabilities."""
    if metric == names.VAL_LOSS:
        return metrics.cross_entropy(y, probabilities)
    predicted = probabilities.argmax(axis=1)
    if metric == names.VAL_MACRO_F1:  # called thousands of times per selection: NumPy, not scikit-learn
        return _macro_f1(np.asarray(y), predicted)
    return metrics.classification_metrics(y, predicted)[metric]


def _macro_f1(y: np.ndarray, predicted: np.ndarray) -> float:
    """scikit-learn's `f1_score(average="macro", zero_division=0)`: the mean F1 over the labels present in
    `y` or `predicted`."""
    present = np.union1d(y, predicted)
    true_positive = np.bincount(y[y == predicted], minlength=present.max() + 1)[present]
    actual = np.bincount(y, minlength=present.max() + 1)[present]
    guessed = np.bincount(predicted, minlength=present.max() + 1)[present]
    denominator = actual + guessed
    f1 = np.divide(2.0 * true_positive, denominator, out=np.zeros(len(present)), where=denominator > 0)
    return float(f1.mean())


def select(y: np.ndarray, candidates: list[np.ndarray], metric: str, maximize: bool, method: str = "caruana",
           max_members: int = 3, rounds: int = 10, affordable=None) -> Selection:
    """Choose an ensemble of `candidates` (each (N, classes) probabilities on the same N images).
    `affordable(set of candidate indices) -> bool`, when given, is a budget (camp.serving_cost): only member
    sets it admits are considered, the best single candidate included (it must admit at least one)."""
    if not candidates:
        raise ValueError("ensemble selection needs at least one candidate")
    shapes = {candidate.shape for candidate in candidates}
    if len(shapes) != 1 or len(y) != candidates[0].shape[0]:
        raise ValueError(f"candidates must share one (N, classes) shape matching {len(y)} labels, got {sorted(shapes)}")
    direction = "maximize" if maximize else "minimize"

    def better(a, b):
        return names.better(a, b, direction)
    def admits(members) -> bool:
        return affordable is None or bool(affordable(frozenset(members)))
    singles = [score(y, candidate, metric) for candidate in candidates]
    order = [i for i in sorted(range(len(candidates)), key=lambda i: singles[i], reverse=maximize) if admits({i})]
    if not order:
        raise ValueError("ensemble selection: the budget admits none of the candidates")
    best = order[0]
    if method == "top_k":
        members = []
        for index in order:
            if len(members) < max_members and admits({*members, index}):
                members.append(index)
        counts = {member: 1 for member in members}
    else:
        # every round adds the best member (repeats allowed); the best prefix of the rounds is kept, so a
        # pair that only helps once a third joins is still found (ties: the shorter prefix)
        picks, values = [], []
        total = np.zeros_like(candidates[0], dtype=np.float64)
        for _ in range(rounds):
            pick, pick_value = None, None
            for index in order:  # ties go to the better single model
                if index not in picks and (len(set(picks)) >= max_members or not admits({*picks, index})):
                    continue
                value = score(y, (total + candidates[index]) / (len(picks) + 1), metric)
                if pick_value is None or better(value, pick_value):
                    pick, pick_value = index, value
            picks.append(pick)
            values.append(pick_value)
            total += candidates[pick]
        best_prefix = 0
        for position, value in enumerate(values):
            if better(value, values[best_prefix]):
                best_prefix = position
        counts: dict[int, int] = {}
        for pick in picks[:best_prefix + 1]:
            counts[pick] = counts.get(pick, 0) + 1
        members = sorted(counts, key=lambda i: (-counts[i], order.index(i)))
    weight_total = sum(counts.values())
    weights = [counts[member] / weight_total for member in members]
    combined = sum(weight * candidates[member] for member, weight in zip(members, weights))
    return Selection(members, weights, score(y, combined, metric), best, singles[best])


def average(probabilities: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Weighted mean of members' probabilities; a row NaN in any member (unreadable item) stays NaN."""
    return sum(weight * p for weight, p in zip(weights, probabilities)) / float(sum(weights))


def split_half_estimate(y: np.ndarray, procedure, metric: str, splits: int = 50, seed: int = 0) -> tuple[float, float]:
    """What a selection `procedure` scores on images it did not choose on: split the images in two halves
    (stratified by label), choose on one and score on the other, both ways, over `splits` random splits.
    Returns the mean held-out `metric` and its standard error.

    `procedure(indices)` chooses on the images `indices` and returns `predict(indices) -> probabilities` on
    any other images. Choosing and scoring on the same images (what the ensemble's own validation value
    does) is optimistic when many candidates are compared on a few hundred images; this is not."""
    if splits < 1:
        raise ValueError(f"split_half_estimate needs splits >= 1, got {splits}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(splits):
        first, second = [], []
        for label in np.unique(y):  # each label split evenly, so no half lacks a small label
            members = rng.permutation(np.flatnonzero(y == label))
            offset = int(rng.integers(2))  # odd counts: which half gets the extra image varies
            first.extend(members[offset::2])
            second.extend(members[1 - offset::2])
        for chosen_on, scored_on in ((np.sort(first), np.sort(second)), (np.sort(second), np.sort(first))):
            predict = procedure(chosen_on)
            values.append(score(y[scored_on], predict(scored_on), metric))
    return float(np.mean(values)), float(np.std(values) / np.sqrt(len(values)))
