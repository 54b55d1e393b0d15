"""The statistics of `camp ablate`: per knob value, the metric over seeds and the per-label recall; per pair
of values, the paired difference on the same images and seeds with a two-level bootstrap interval
(images and seeds resampled together, so the test set's chance and training's both widen it); and the
plain-words verdict. Pure functions of predictions: `camp.ablate` gathers them, the report renders them.
"""

from __future__ import annotations

import numpy as np

from camp import metrics, names


def label_metric(kind: str, y: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """accuracy or macro_f1 from a confusion count (fast enough for thousands of resamples); macro-F1
    averages over the labels present in `y` or `predicted`, as scikit-learn's f1_score(average="macro")."""
    if kind == "accuracy":
        return float(np.mean(y == predicted))
    if kind != "macro_f1":
        raise ValueError(f"label_metric: expected accuracy or macro_f1, got {kind!r}")
    matrix = np.bincount(y * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    true_positive = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # 2 tp + fp + fn
    present = denominator > 0
    return float(np.mean(2 * true_positive[present] / denominator[present])) if present.any() else 0.0


def _score(metric: str, y: np.ndarray, probabilities: np.ndarray) -> float:
    kind = metric.rsplit("/", 1)[-1]
    if kind == "loss":
        return metrics.value(metric, y, probabilities=probabilities)
    return label_metric(kind, y, probabilities.argmax(axis=1), probabilities.shape[1])


def paired_seeds(metric: str, y: np.ndarray, first: list[np.ndarray], second: list[np.ndarray],
                 resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """mean over seeds of metric(first[s]) - metric(second[s]) (probabilities on the same items `y`, seed s
    of one value paired with seed s of the other), and its percentile interval over resamples that draw
    the items and the seeds with replacement."""
    if len(first) != len(second) or not first:
        raise ValueError("paired_seeds: both values need the same, non-zero number of seeds")
    y = np.asarray(y)
    n, seeds = len(y), len(first)
    point = float(np.mean([_score(metric, y, a) - _score(metric, y, b) for a, b in zip(first, second)]))
    predicted = None if metric.endswith("/loss") else ([a.argmax(axis=1) for a in first], [b.argmax(axis=1) for b in second])
    kind, classes = metric.rsplit("/", 1)[-1], first[0].shape[1]
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for index in range(resamples):
        items, chosen = rng.integers(0, n, n), rng.integers(0, seeds, seeds)
        differences = []
        for s in chosen:
            if predicted is None:
                differences.append(_score(metric, y[items], first[s][items]) - _score(metric, y[items], second[s][items]))
            else:
                differences.append(label_metric(kind, y[items], predicted[0][s][items], classes)
                                   - label_metric(kind, y[items], predicted[1][s][items], classes))
        draws[index] = np.mean(differences)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return point, float(low), float(high)


def verdict(first: str, second: str, difference: float, low: float, high: float, direction: str, metric: str) -> str:
    """"gray beats color by 0.040 [0.010, 0.070]" when the interval excludes 0, else "no difference"."""
    sign = names.gain_sign(direction)
    gain, (gain_low, gain_high) = sign * difference, sorted((sign * low, sign * high))
    if gain_low > 0:
        return f"{first} beats {second} by {gain:.3f} [{gain_low:.3f}, {gain_high:.3f}] ({metric})"
    if gain_high < 0:
        return f"{second} beats {first} by {-gain:.3f} [{-gain_high:.3f}, {-gain_low:.3f}] ({metric})"
    return (f"{first} vs {second}: no difference this data can show ({metric} {gain:+.3f} "
            f"[{gain_low:+.3f}, {gain_high:+.3f}])")


def knob_result(knob: str, values: list, outputs: dict, labels: list, metric: str, direction: str,
                split: str, resamples: int = 1000, level: float = 0.95) -> dict:
    """One knob's table and verdicts. `outputs[(value, replica)]` = {split: (y, probabilities)} on aligned
    items; only seeds every value of the pair has are paired."""
    split_metric = names.on_split(metric, split)
    rows = []
    for value in values:
        replicas = sorted(r for (v, r) in outputs if v == value)
        row = {"value": value, "seeds": len(replicas)}
        for name in ("validation", split):
            scores = [_score(metric, *outputs[(value, r)][name]) for r in replicas if name in outputs[(value, r)]]
            row[names.split_prefix(name)] = round(float(np.mean(scores)), 4) if scores else None
            row[f"{names.split_prefix(name)}_per_seed"] = [round(s, 4) for s in scores]
        recalls = []
        for r in replicas:
            y, probabilities = outputs[(value, r)][split]
            predicted = probabilities.argmax(axis=1)
            recalls.append([float(np.mean(predicted[y == k] == k)) if (y == k).any() else float("nan")
                            for k in range(len(labels))])
        row["recall"] = ({label: round(float(np.nanmean(column)), 3) for label, column in zip(labels, np.array(recalls).T)}
                         if recalls else {})
        rows.append(row)
    maximize = names.maximizing(direction)
    ordered = sorted((row for row in rows if row[names.split_prefix(split)] is not None),
                     key=lambda row: row[names.split_prefix(split)], reverse=maximize)
    pairs = []
    for position, better_row in enumerate(ordered):
        for other in ordered[position + 1:]:
            a, b = better_row["value"], other["value"]
            shared = sorted({r for (v, r) in outputs if v == a} & {r for (v, r) in outputs if v == b})
            y = outputs[(a, shared[0])][split][0]
            difference, low, high = paired_seeds(metric, y, [outputs[(a, r)][split][1] for r in shared],
                                                 [outputs[(b, r)][split][1] for r in shared], resamples, level)
            pairs.append({"first": a, "second": b, "difference": round(difference, 4), "interval": [round(low, 4), round(high, 4)],
                          "seeds": len(shared),
                          "verdict": verdict(_text(a), _text(b), difference, low, high, direction, split_metric)})
    return {"knob": knob, "metric": split_metric, "split": split, "column": names.split_prefix(split), "rows": rows,
            "pairs": pairs}


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
