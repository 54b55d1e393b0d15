"""One training run: `train(config)` loads the data, preprocesses it, fits the CNN, selects the best
epoch on validation and logs everything to one MLflow run. `camp train` and every sweep trial call it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from camp import metrics, names, tracking
from camp.classical import fit_hog_linear
from camp.config import flatten
from camp.data import Dataset, printable
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
from camp.preprocess import load_arrays
from camp.run_config import LEAKS, RunConfig, prepare_dataset


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


_GRADIENTS = {"active": 0, "before": set()}
_GRADIENTS_LOCK = threading.Lock()


@contextlib.contextmanager
def released_custom_gradients():
    """Drop the `tf.custom_gradient` registrations a training run leaves in TensorFlow's global gradient
    registry, so a sweep process does not grow with every trial.

    Keras's TensorFlow optimizer sums gradients through `tf.distribute`, which wraps them in
    `tf.custom_gradient`; each trace registers a `CustomGradient-<uid>` function that nothing removes
    (`keras.backend.clear_session()` included), and it holds that trial's whole train-step graph: about
    19 MB per trial (`bench/memory.py`). A registration is only looked up while a gradient is being
    built, so once no run is training its entries are dead. Entries added while any run is active are
    removed when the last one ends. TensorFlow's registry is private API: if it moves, nothing is
    removed (and `bench/memory.py` shows the growth again).
    """
    try:
        from tensorflow.python.framework import ops

        registry = ops.gradient_registry._registry
    except (ImportError, AttributeError):
        registry = None
    with _GRADIENTS_LOCK:
        if registry is not None and _GRADIENTS["active"] == 0:
            _GRADIENTS["before"] = set(registry)
        _GRADIENTS["active"] += 1
    try:
        yield
    finally:
        with _GRADIENTS_LOCK:
            _GRADIENTS["active"] -= 1
            if registry is not None and _GRADIENTS["active"] == 0:
                for key in [key for key in registry if key not in _GRADIENTS["before"]
                            and str(key).startswith("CustomGradient-")]:
                    registry.pop(key, None)


def configure_tensorflow() -> None:
    """Quiet logs and honour CAMP_THREADS (threads per process) before TensorFlow starts."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = os.environ.get("CAMP_THREADS")
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # already initialised in this process
    # the first op starts the runtime, which prints CPU-feature and cuInit lines a user cannot act on
    with tracking.stderr_silenced():
        tf.constant(0)


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
    tracker = _EpochTracker(config, x_val, y_val, n_classes, epoch_callback, progress)
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


def memory_usage() -> dict[str, float]:
    """This process's resident memory now and at its peak, in MiB (Linux), for growth checks across trials."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        current = pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        current = float("nan")
    return {"system/rss_mb": round(current, 1), "system/peak_rss_mb": round(peak, 1)}


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


def _now() -> float:
    return time.time()  # the deadline's clock (a test runs epochs of a known length on another)


class _EpochTracker:
    """Keras callback: per-epoch validation metrics to MLflow, best-epoch weights, early stopping."""

    def __new__(cls, *args, **kwargs):
        import keras

        class Tracker(keras.callbacks.Callback):
            def __init__(self, config, x_val, y_val, n_classes, epoch_callback, progress):
                super().__init__()
                self.config, self.x_val, self.y_val = config, x_val, y_val
                self.epoch_callback, self.progress = epoch_callback, progress
                self.best_value, self.best_epoch, self.best_weights = None, -1, None
                self.epochs_run, self.since_best, self.error = 0, 0, None
                self.epoch_started = time.time()
                self.scheduled = config.model.max_epochs  # brought forward by fit_to's deadline
                self.deadline, self.schedule, self.steps_per_epoch, self.first_epoch_ended = None, None, 1, None

            def fit_to(self, deadline: float, schedule, steps_per_epoch: int) -> None:
                self.deadline, self.schedule, self.steps_per_epoch = deadline, schedule, steps_per_epoch

            def _reschedule(self) -> None:
                """The epochs that fit before the deadline at the pace of the epochs after the first (which
                also traces the graph), between min_epochs and max_epochs; re-read after every epoch, since
                the pace moves when the other worker's trial changes."""
                now = _now()
                if self.epochs_run == 1:
                    self.first_epoch_ended = now
                    return
                pace = (now - self.first_epoch_ended) / (self.epochs_run - 1)
                fits = self.epochs_run + int(max(0.0, self.deadline - now) // pace)
                model_config = self.config.model
                scheduled = min(model_config.max_epochs, max(fits, model_config.min_epochs, self.epochs_run))
                if scheduled != self.scheduled:
                    self.scheduled = scheduled
                    if self.schedule is not None:  # a constant rate has no end to move
                        self.schedule.end_at(scheduled * self.steps_per_epoch)

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch_started = time.time()

            def on_epoch_end(self, epoch, logs=None):
                import mlflow

                logs = logs or {}
                values = {names.TRAIN_LOSS: float(logs.get("loss", np.nan))}
                if self.x_val is not None:  # none when fit on train + validation: nothing is left to score
                    probabilities = self.model.predict(self.x_val, batch_size=256, verbose=0)
                    values.update({names.VAL_LOSS: metrics.cross_entropy(self.y_val, probabilities),
                                   **metrics.classification_metrics(self.y_val, probabilities.argmax(axis=1))})
                self.epochs_run = epoch + 1
                if self.deadline is not None:
                    self._reschedule()
                    if self.epochs_run >= self.scheduled:
                        self.model.stop_training = True
                mlflow.log_metrics(values, step=epoch)
                if not np.isfinite(values[names.TRAIN_LOSS]):
                    self.error = FloatingPointError(f"training loss is {values[names.TRAIN_LOSS]} at epoch {epoch}")
                    self.model.stop_training = True
                    return
                if self.x_val is None:
                    if self.progress:
                        print(f"  epoch {epoch + 1:>3}/{self.scheduled}  train/loss "
                              f"{values[names.TRAIN_LOSS]:.4f}  ({time.time() - self.epoch_started:.1f}s)", file=sys.stderr)
                    return
                value = values[self.config.metric]
                improved = names.better(value, self.best_value, self.config.direction)
                if improved:
                    self.best_value, self.best_epoch, self.since_best = value, epoch, 0
                    self.best_weights = self.model.get_weights()
                else:
                    self.since_best += 1
                if self.progress:
                    print(f"  epoch {epoch + 1:>3}/{self.scheduled}  "
                          + "  ".join(f"{k} {v:.4f}" for k, v in values.items())
                          + f"  ({time.time() - self.epoch_started:.1f}s){' *' if improved else ''}", file=sys.stderr)
                if self.epoch_callback is not None:
                    self.epoch_callback(epoch, values)  # may raise optuna.TrialPruned
                if self.since_best >= self.config.model.patience and self.epochs_run >= self.config.model.min_epochs:
                    self.model.stop_training = True

        return Tracker(*args, **kwargs)
