"""Metric names (defined once, used by YAML, Optuna and MLflow) and how each is computed."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
VAL_MACRO_F1 = "val/macro_f1"

#: Metrics a study may optimise, with the direction that makes sense for each.
OBJECTIVES = {VAL_MACRO_F1: "maximize", VAL_ACCURACY: "maximize", VAL_LOSS: "minimize"}


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
