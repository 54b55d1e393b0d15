"""Evaluation of a registered model version, as MLflow users expect on a version's run: the served
model's own predictions (from raw files, through the pyfunc) on validation and test, logged as
`eval/<split>/...` metrics (accuracy, macro-F1, per-label precision, recall, F1, support), a confusion
matrix and precision-recall curves per split under the run's `evaluation/<split>/` artifacts, and a
version description that says what the version is.

camp scores the pyfunc itself rather than through `mlflow.models.evaluate`: that API feeds the model a
DataFrame of features, while camp's model takes image files or bytes and does its own preprocessing.
Test is scored here to be reported, never to choose: promotion reads validation, except for a model fit on
train + validation (`study.finalize.train_on_validation`), which has no other held-out split.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from sklearn.metrics import confusion_matrix

from camp import metrics, names
from camp.plots import confusion_matrix_plot, precision_recall_plot
from camp.registry import MODEL_NAME
from camp.run_config import prepare_dataset

SPLITS = ("validation", "test")


def split_predictions(model, dataset, split: str) -> dict:
    """`model`'s (a CampClassifier's) probabilities on a split's readable images, in the shape of a run's
    `val_predictions.json` (probabilities as an (N, labels) array; N is 0 for an empty split)."""
    items = dataset.split(split)
    probabilities, errors = (model._probabilities([item.path for item in items], []) if items
                             else (np.empty((0, len(dataset.labels))), []))
    unreadable = {index for index, _ in errors}
    kept = [index for index in range(len(items)) if index not in unreadable]
    return {"labels": list(dataset.labels), "relpaths": [items[i].relpath for i in kept],
            "y_true": [items[i].label for i in kept],
            "probabilities": np.asarray(probabilities, dtype=np.float64)[kept]}


def evaluate_version(model_uri: str, version, run_id: str, config, data_fingerprint: str) -> dict:
    """Score the version on validation and test, attach the results to `run_id`, describe the version;
    returns {split: macro-F1}."""
    client = mlflow.MlflowClient()
    dataset, _ = prepare_dataset(config)
    labels = list(dataset.labels)
    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    scores, stamp = {}, int(time.time() * 1000)
    for split in SPLITS:
        outputs = split_predictions(model, dataset, split)
        if not outputs["y_true"]:
            continue
        y, probabilities = np.array(outputs["y_true"]), outputs["probabilities"]
        predicted = probabilities.argmax(axis=1)
        prefix = f"eval/{split}"
        values = {**metrics.classification_metrics(y, predicted, prefix), **metrics.per_label_metrics(y, predicted, labels, prefix)}
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(key, value, stamp, 0) for key, value in values.items()])
        with tempfile.TemporaryDirectory() as directory:
            matrix = confusion_matrix(y, predicted, labels=list(range(len(labels))))
            confusion_matrix_plot(matrix, labels, Path(directory) / "confusion_matrix.png",
                                  f"v{version.version} on {split} ({len(y)} images)")
            precision_recall_plot(y, probabilities, labels, Path(directory) / "precision_recall.png",
                                  f"v{version.version} on {split}: precision-recall per label")
            client.log_artifacts(run_id, directory, f"evaluation/{split}")
        scores[split] = values[f"{prefix}/macro_f1"]
    tags = client.get_run(run_id).data.tags
    trials = tags.get(names.MEMBER_TRIALS) or tags.get(names.TRIAL, "?")
    what = "ensemble of trials" if names.MEMBER_TRIALS in tags else "trial"
    scored = "; ".join(f"{split} macro-F1 {score:.3f}" for split, score in scores.items())
    client.update_model_version(MODEL_NAME, version.version, description=(
        f"{config.model.family if what == 'trial' else 'camp'} classifier: {what} {trials} of study "
        f"{tags.get(names.STUDY, '-')}, data fingerprint {data_fingerprint}; {scored or 'no split scored'} "
        f"(run {run_id}, artifacts " + ", ".join(f"evaluation/{split}/" for split in scores) + ")."
        + (" Fit on train + validation: its validation score is on images it trained on; test is the held-out one."
           if tags.get(names.FIT_ON) == names.TRAIN_AND_VALIDATION else "")))
    return scores
