"""A CNN fit's epochs, watched from inside Keras (`EpochTracker`, a callback): each epoch's validation metrics
logged to the MLflow run and passed to the sweep's pruner, the best epoch's weights kept, early stopping
(`model.patience`, never before `model.min_epochs`), and, with a deadline, the epochs that still fit and the
learning-rate schedule's end brought forward to them.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from camp import metrics, names


def clock() -> float:
    return time.time()  # the deadline's clock (a test runs epochs of a known length on another)


class EpochTracker:
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
                now = clock()
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
