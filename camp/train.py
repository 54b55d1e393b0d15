"""One training run: `train(config)` loads the data, preprocesses it, fits the CNN, selects the best
epoch on validation and logs everything to one MLflow run. `camp train` and every sweep trial call it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from camp import metrics, names, tracking
from camp.caches import load_arrays
from camp.classical import fit_hog_linear
from camp.data import Dataset, printable
from camp.epochs import EpochTracker
from camp.model import (
    balanced_weights,
    build_model,
    learning_rate,
    make_loss,
    make_optimizer,
    mirror,
    predict_probabilities,
    training_seed,
)
from camp.plots import confusion_matrix_plot, shared_preprocessing_grid
from camp.run_config import LEAKS, RunConfig, prepare_dataset
from camp.runtime import configure_tensorflow, memory_usage, released_custom_gradients
from camp.typed_yaml import flatten


@dataclasses.dataclass
class TrainResult:
    run_id: str
    value: float  # the objective metric at the selected epoch
    metrics: dict
    best_epoch: int
    epochs_run: int
    labels: tuple
    y_val: np.ndarray
    val_probabilities: np.ndarray
    val_relpaths: list
    cache_hit: bool
    seconds: float


def train(config: RunConfig, *, epoch_callback: Callable[[int, dict], None] | None = None,
          progress: bool = True, run_name: str | None = None, deadline: float | None = None) -> TrainResult:
    """Fit one model and log one MLflow run (or into the active run, for sweep trials): params, tags,
    datasets, metrics, pictures, validation predictions and the model bundle (`bundle/`). The served
    pyfunc is the caller's to log (`camp train`, the sweep's registration). With a `deadline` (a
    `time.time()`), a CNN whose epochs would run past it is shortened to the epochs that fit, never below
    `min_epochs`, and its learning-rate schedule still decays to zero by its last epoch."""
    import mlflow

    started = time.time()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if mlflow.active_run() is None:
        tracking.setup()
        with mlflow.start_run(run_name=run_name, log_system_metrics=True) as run:  # MLflow's system/* (psutil)
            return _train_in_run(config, run.info.run_id, epoch_callback, progress, started, deadline)
    return _train_in_run(config, mlflow.active_run().info.run_id, epoch_callback, progress, started, deadline)


def _train_in_run(config, run_id, epoch_callback, progress, started, deadline) -> TrainResult:
    import mlflow

    try:
        configure_tensorflow()  # before anything imports TensorFlow (released_custom_gradients does)
        with released_custom_gradients():
            return _fit(config, run_id, epoch_callback, progress, started, deadline)
    except BaseException as error:
        if type(error).__name__ != "TrialPruned":
            mlflow.log_text("".join(traceback.format_exception(error)), "error.txt")
            mlflow.set_tag(names.ERROR, f"{type(error).__name__}: {error}"[:500])
        raise


def _fit(config: RunConfig, run_id: str, epoch_callback, progress: bool, started: float,
         deadline: float | None = None) -> TrainResult:
    import mlflow

    dataset, data_fp = prepare_dataset(config)
    # only the splits training uses: test is for reporting (the report predicts it through the bundle),
    # unless the model is fit on train + validation, when test is what scores it
    scored = config.scored_on
    splits = ("train", "validation", "test") if scored == "test" else ("train", "validation")
    used = [item for item in dataset.items if item.split in splits]
    arrays = load_arrays(used, f"{data_fp}-{'+'.join(splits)}", config.preprocess, progress=progress)
    mlflow.log_params({k: v for k, v in flatten(config.to_dict()).items()})
    mlflow.set_tags({names.GIT_COMMIT: tracking.git_commit(), names.DATA_FINGERPRINT: data_fp,
                     names.DATA_ROOT: str(dataset.root), names.SEED: config.seed,
                     names.CACHE: "hit" if arrays.cache_hit else "miss", names.CACHE_KEY: arrays.key,
                     names.SKIPPED_IMAGES: len(arrays.skipped), names.FIT_ON: config.fit_on})
    mlflow.log_text(yaml.safe_dump(config.to_dict(), sort_keys=False), "config.yaml")
    log_datasets(dataset, data_fp)
    if LEAKS[data_fp]:  # identical files in two splits, found by prepare_dataset: reported on every run
        mlflow.log_dict({"groups": LEAKS[data_fp]}, "duplicates_across_splits.json")
        mlflow.set_tag(names.LEAKED_DUPLICATES, len(LEAKS[data_fp]))
        print(f"warning: {len(LEAKS[data_fp])} identical file(s) sit in more than one split (leakage), e.g. "
              f"{LEAKS[data_fp][0]}; see the run's duplicates_across_splits.json", file=sys.stderr)
    if arrays.skipped:
        mlflow.log_dict(arrays.skipped, "skipped_images.json")
        print(f"warning: skipped {len(arrays.skipped)} unreadable image(s), e.g. "
              f"{next(iter(arrays.skipped.values()))} (full list in the run's skipped_images.json)", file=sys.stderr)
    split = np.array([item.split for item in arrays.items])
    y_all = np.array([item.label for item in arrays.items])
    fit_mask = np.isin(split, [name for name in splits if name != scored])
    score_mask = split == scored
    if not (split == "train").any() or not (split == "validation").any() or not score_mask.any():
        counts = ", ".join(f"{(split == name).sum()} {name}" for name in splits)
        raise ValueError(f"{dataset.root}: need readable {' and '.join(splits)} images (have {counts})")
    x_train, y_train = arrays.x[fit_mask], y_all[fit_mask]
    x_val, y_val = arrays.x[score_mask], y_all[score_mask]  # the scored split: validation, or test
    labels = dataset.labels
    n_classes = len(labels)

    if config.model.family == "hog_linear":
        seed = training_seed(config.seed, config.model)
        model, best_epoch, epochs_run = fit_hog_linear(x_train, y_train, n_classes, config.model, seed), 0, 1
    else:  # fit on train + validation, no split is left to select an epoch: all max_epochs run
        model, best_epoch, epochs_run, scheduled = _fit_cnn(config, x_train, y_train,
                                                            None if scored == "test" else x_val, y_val, n_classes,
                                                            epoch_callback, progress, deadline)
        if scheduled < config.model.max_epochs:
            mlflow.set_tag(names.SHORTENED, f"{scheduled} of {config.model.max_epochs} epochs")
    probabilities = model.predict(x_val, batch_size=256, verbose=0)
    predicted = probabilities.argmax(axis=1)
    prefix = names.split_prefix(scored)
    final = {**metrics.classification_metrics(y_val, predicted, prefix),
             **metrics.per_label_metrics(y_val, predicted, list(labels), prefix),
             f"{prefix}/loss": metrics.cross_entropy(y_val, probabilities), "best_epoch": best_epoch}
    # logged at the step after the last epoch, so a run's latest value is the selected model's
    mlflow.log_metrics(final, step=epochs_run)
    mlflow.log_metrics(memory_usage())
    _log_pictures(dataset, data_fp, y_val, predicted, labels, config)
    scored_items = [item for item in arrays.items if item.split == scored]
    mlflow.log_dict({"labels": list(labels), "relpaths": [item.relpath for item in scored_items],
                     "y_true": y_val.tolist(), "y_pred": predicted.tolist(),
                     "probabilities": probabilities.round(6).tolist(),
                     # with the mirror images' averaged in (what predict_probabilities(..., "flip") serves, from
                     # the plain ones above): finalize chooses test-time augmentation on these
                     "probabilities_flip": ((probabilities + predict_probabilities(model, mirror(x_val))) / 2
                                            ).round(6).tolist()},
                    names.PREDICTIONS[scored])
    with tempfile.TemporaryDirectory() as directory:
        model_dir = save_model_bundle(model, config, labels, Path(directory) / "bundle")
        mlflow.log_artifacts(str(model_dir), "bundle")
    value = final[names.on_split(config.metric, scored)]
    return TrainResult(run_id, value, final, best_epoch, epochs_run, labels, y_val,
                       probabilities, [i.relpath for i in scored_items], arrays.cache_hit, time.time() - started)


def _fit_cnn(config: RunConfig, x_train, y_train, x_val, y_val, n_classes: int, epoch_callback, progress: bool,
             deadline: float | None = None):
    """The CNN with its best validation epoch's weights, that epoch, and how many epochs ran; with no
    validation images (`x_val` None) the last epoch's, after all `max_epochs`."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(training_seed(config.seed, config.model))
    tf.config.experimental.enable_op_determinism()
    model_config = config.model
    weights = balanced_weights(y_train, n_classes)
    model = build_model(config.preprocess.input_shape, n_classes, model_config)
    steps_per_epoch = -(-len(x_train) // model_config.batch_size)
    rate = learning_rate(model_config, steps_per_epoch)
    model.compile(optimizer=make_optimizer(model_config, steps_per_epoch, rate), loss=make_loss(model_config, weights))
    class_weight = ({i: float(w) for i, w in enumerate(weights) if w > 0}
                    if model_config.loss_weighting == "balanced" else None)
    tracker = EpochTracker(config, x_val, y_val, n_classes, epoch_callback, progress)
    if deadline is not None:
        tracker.fit_to(deadline, rate if hasattr(rate, "end_at") else None, steps_per_epoch)
    model.fit(x_train, keras.utils.to_categorical(y_train, n_classes), batch_size=model_config.batch_size,
              epochs=model_config.max_epochs, class_weight=class_weight, callbacks=[tracker], verbose=0, shuffle=True)
    if tracker.error is not None:
        raise tracker.error
    if x_val is None:
        return model, tracker.epochs_run - 1, tracker.epochs_run, tracker.scheduled
    model.set_weights(tracker.best_weights)
    return model, tracker.best_epoch, tracker.epochs_run, tracker.scheduled


def log_datasets(dataset: Dataset, data_fp: str) -> None:
    """Each split as an MLflow dataset input (relpath, label; digest = the data fingerprint, source = the
    data root), so the UI's Dataset column and filter show what a run was trained and judged on."""
    import warnings

    import mlflow
    import pandas as pd

    for split, context in (("train", "training"), ("validation", "validation"), ("test", "test")):
        items = dataset.split(split)
        if not items:
            continue
        # a file name that is not UTF-8 (held as surrogate escapes) is shown as its bytes, \xff: MLflow's
        # dataset profile is Arrow, which takes only valid UTF-8
        frame = pd.DataFrame({"relpath": [printable(item.relpath) for item in items],
                              "label": [dataset.labels[item.label] for item in items]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow warns that a plain folder source is "local"
            source = mlflow.data.from_pandas(frame, source=str(dataset.root), targets="label",
                                             name=f"{dataset.root.name}-{split}", digest=data_fp[:20])
        mlflow.log_input(source, context=context)


def save_model_bundle(model, config: RunConfig, labels, directory: Path) -> Path:
    """The trained Keras model plus what the served model needs to preprocess raw images."""
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_weights"):  # Keras
        model.save(directory / "model.keras")
    else:
        model.save(directory)
    (directory / "camp.json").write_text(json.dumps(
        {"labels": list(labels), "preprocess": dataclasses.asdict(config.preprocess), "metric": config.metric,
         "direction": config.direction, "config": config.to_dict()}, indent=2))
    return directory


def _log_pictures(dataset, data_fingerprint, y_val, predicted, labels, config) -> None:
    import mlflow
    from sklearn.metrics import confusion_matrix

    with tempfile.TemporaryDirectory() as directory:
        matrix = confusion_matrix(y_val, predicted, labels=list(range(len(labels))))
        mlflow.log_dict({"labels": list(labels), "matrix": matrix.tolist()}, "confusion_matrix.json")
        mlflow.log_artifact(str(confusion_matrix_plot(matrix, labels, Path(directory) / "confusion_matrix.png",
                                                      f"{config.scored_on.capitalize()} confusion matrix")))
        mlflow.log_artifact(str(shared_preprocessing_grid(dataset.items, labels, config.preprocess, config.seed,
                                                          data_fingerprint, Path(directory) / "preprocessing.png")))
