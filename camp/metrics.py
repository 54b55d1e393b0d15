"""How each metric is computed (its name is in camp.names), with bootstrap intervals and trivial floors."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, prefix: str = "val") -> dict[str, float]:
    """Accuracy and macro-F1 under `prefix/` names, over integer labels."""
    return {
        f"{prefix}/accuracy": float(accuracy_score(y_true, y_pred)),
        f"{prefix}/macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def cross_entropy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true label (probabilities clipped at 1e-7): `val/loss`."""
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-7, 1.0))))


def per_label_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], prefix: str = "val") -> dict[str, float]:
    """Precision, recall, F1 and support of every label, as `prefix/<metric>/<label>` names."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(labels))), zero_division=0
    )
    out: dict[str, float] = {}
    for index, label in enumerate(labels):
        out[f"{prefix}/precision/{label}"] = float(precision[index])
        out[f"{prefix}/recall/{label}"] = float(recall[index])
        out[f"{prefix}/f1/{label}"] = float(f1[index])
        out[f"{prefix}/support/{label}"] = float(support[index])
    return out


def value(metric: str, y_true: np.ndarray, predicted: np.ndarray | None = None,
          probabilities: np.ndarray | None = None) -> float:
    """`metric` (any `<split>/accuracy`, `<split>/macro_f1` or `<split>/loss`) of labels or probabilities;
    labels are taken as the probabilities' argmax when only those are given."""
    kind = metric.rsplit("/", 1)[-1]
    if kind == "loss":
        if probabilities is None:
            raise ValueError(f"{metric} needs probabilities, not only labels")
        return cross_entropy(y_true, probabilities)
    if predicted is None:
        predicted = np.asarray(probabilities).argmax(axis=1)
    if kind == "accuracy":
        return float(accuracy_score(y_true, predicted))
    if kind == "macro_f1":
        return float(f1_score(y_true, predicted, average="macro", zero_division=0))
    raise ValueError(f"unknown metric {metric!r}: expected <split>/accuracy, <split>/macro_f1 or <split>/loss")


def _scores(metric: str, outputs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(labels, probabilities) from a model's outputs: 1-D labels, or 2-D probabilities."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2:
        return outputs.argmax(axis=1), outputs
    if metric.endswith("/loss"):
        raise ValueError(f"{metric} needs probabilities, not only labels")
    return outputs, None


def bootstrap_interval(metric: str, y_true, outputs, resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `metric` over resamples (with replacement) of the items (scipy.stats.bootstrap);
    `outputs` are labels (1-D) or probabilities (2-D)."""
    from scipy.stats import bootstrap

    y_true = np.asarray(y_true)
    labels, probabilities = _scores(metric, outputs)

    def statistic(index):
        return value(metric, y_true[index], labels[index], None if probabilities is None else probabilities[index])

    interval = bootstrap((np.arange(len(y_true)),), statistic, vectorized=False, n_resamples=resamples,
                         confidence_level=level, method="percentile", random_state=seed).confidence_interval
    return float(interval.low), float(interval.high)


def paired_bootstrap(metric: str, y_true, first, second, resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """metric(first) - metric(second) on the same items, and the percentile interval of that difference over
    resamples of the items (both models scored on each resample: paired). `first`/`second`: labels or
    probabilities."""
    from scipy.stats import bootstrap

    y_true = np.asarray(y_true)
    (first_labels, first_p), (second_labels, second_p) = _scores(metric, first), _scores(metric, second)

    def statistic(index):
        return (value(metric, y_true[index], first_labels[index], None if first_p is None else first_p[index])
                - value(metric, y_true[index], second_labels[index], None if second_p is None else second_p[index]))

    everything = np.arange(len(y_true))
    interval = bootstrap((everything,), statistic, vectorized=False, n_resamples=resamples, confidence_level=level,
                         method="percentile", random_state=seed).confidence_interval
    return float(statistic(everything)), float(interval.low), float(interval.high)


def trivial_predictions(metric: str, y_true, n_classes: int, seed: int = 20261201) -> dict[str, np.ndarray]:
    """The floors no model is promoted without beating, as outputs on the same items: for a label metric,
    always the largest label and chance (a uniformly random label); for the loss, the label frequencies as
    every item's probabilities (its loss is the labels' entropy, which no constant guess beats)."""
    y_true = np.asarray(y_true)
    frequencies = np.bincount(y_true, minlength=n_classes) / max(len(y_true), 1)
    if metric.endswith("/loss"):
        return {"label frequencies": np.tile(frequencies, (len(y_true), 1))}
    return {"largest label": np.full(len(y_true), int(frequencies.argmax())),
            "chance": np.random.default_rng(seed).integers(0, n_classes, len(y_true))}
