"""Names defined once and imported everywhere: metric names (YAML, Optuna, MLflow), the MLflow tag names
camp writes, and whether one value of a metric is better than another."""

from __future__ import annotations

import math

# metrics ------------------------------------------------------------------------------------------
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
VAL_MACRO_F1 = "val/macro_f1"

#: A run's logged predictions on the split that scores it (the one it was not fit on).
PREDICTIONS = {"validation": "val_predictions.json", "test": "test_predictions.json"}


def split_prefix(split: str) -> str:
    """The prefix of a split's metric names: `val` for validation, else the split's own name (`test`)."""
    return "val" if split == "validation" else split


def on_split(metric: str, split: str) -> str:
    """`val/macro_f1` as scored on `split`: itself on validation, `test/macro_f1` on test."""
    return f"{split_prefix(split)}/{metric.rsplit('/', 1)[-1]}"


#: Metrics a study may optimise, with the direction that makes sense for each.
OBJECTIVES = {VAL_MACRO_F1: "maximize", VAL_ACCURACY: "maximize", VAL_LOSS: "minimize"}


def maximizing(direction) -> bool:
    """True for "maximize" or Optuna's StudyDirection.MAXIMIZE; False for the minimizing ones."""
    text = getattr(direction, "name", direction)
    if str(text).lower() not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    return str(text).lower() == "maximize"


def better(value: float, than: float | None, direction) -> bool:
    """Is `value` strictly better than `than` under `direction`? Anything beats None or NaN."""
    if than is None or (isinstance(than, float) and math.isnan(than)):
        return True
    return value > than if maximizing(direction) else value < than


def gain_sign(direction) -> float:
    """+1 when larger is better, -1 when smaller is: `sign * (a - b)` is a's gain over b."""
    return 1.0 if maximizing(direction) else -1.0


# MLflow tags --------------------------------------------------------------------------------------
# Optuna's side of a run (names shared with Optuna's own MLflow callback)
STUDY = "optuna.study"
TRIAL = "optuna.trial"
STATE = "optuna.state"
STORAGE = "optuna.storage"
RETRY_OF = "optuna.retry_of"
# camp's
ROLE = "camp.role"  # sweep | ablate | ensemble | label-noise | ...
WORKER = "camp.worker"
GIT_COMMIT = "camp.git_commit"
SEED = "camp.seed"
STATUS = "camp.status"
KILLED = "camp.killed"
ERROR = "camp.error"
DATA_FINGERPRINT = "camp.data_fingerprint"
DATA_ROOT = "camp.data_root"
CACHE = "camp.cache"
CACHE_KEY = "camp.cache_key"
SKIPPED_IMAGES = "camp.skipped_images"
LEAKED_DUPLICATES = "camp.leaked_duplicates"
# a CNN whose schedule was brought forward to end within study.timeout: "<epochs> of <max_epochs> epochs"
SHORTENED = "camp.shortened"
# an Optuna user attribute of a finalist trial (camp.refit): the source trial's number; the budget
# estimate leaves finalists out, since they train longer than the search's trials
REFIT_OF = "refit_of"
MEMBERS = "camp.members"
MEMBER_TRIALS = "camp.member_trials"
MEMBER_WEIGHTS = "camp.member_weights"
TTA = "camp.tta"  # test-time augmentation of a registered model: none | flip
# how a logged pyfunc serves its CNNs (camp.quantize): int8 | tflite-float32 (TensorFlow Lite flatbuffers)
# | float (the Keras models), and the share of validation images whose served label the flatbuffers keep
SERVING = "camp.serving"
SERVING_AGREEMENT = "camp.serving_agreement"
SERVING_SPEED = "camp.serving_images_per_second"  # batch throughput measured at registration, on that machine
# a registered ensemble served as a confidence cascade (study.finalize.cascade: camp.cascade): its gate trial,
# threshold, the share of validation images the gate answers alone and the labels' agreement with the ensemble's
CASCADE = "camp.cascade"
FINALIST_OF = "camp.finalist_of"  # a finalist trial's run: the trial whose config it trains again, longer
# what a run, or a registered version's members, was fit on: train (absent) or train+validation
# (study.finalize.train_on_validation); validation then scores nothing and test is the held-out score
FIT_ON = "camp.fit_on"
TRAIN_AND_VALIDATION = "train+validation"  # the value of FIT_ON (and RunConfig.fit_on) for such a model
SOURCE_RUN = "camp.source_run"  # a model retrained on train+validation: the run it was chosen as
TEACHER = "camp.teacher"  # a distilled model (study.finalize.distill): the ensemble run it learnt from
# `camp ablate`: a cell's run names its knob value and replica; the parent run names the run it varies
CELL = "camp.cell"
ABLATION_BASE_RUN = "camp.ablation_base_run"
ABLATION_KNOBS = "camp.ablation_knobs"
# on registered model versions
RUN_ID = "camp.run_id"
METRIC = "camp.metric"
VALUE = "camp.value"
PROMOTED_AT = "camp.promoted_at"
PROMOTION = "camp.promotion"
REGISTERED_VERSION = "camp.registered_version"  # on a sweep's parent run
COMPARED_WITH = "camp.compared_with"
# finalize's choice scored on validation images it did not choose on (camp.finalize_choice.heldout_estimate): on the
# registered version and the sweep's parent run; the ensemble run logs it as the metric `heldout(metric)`
HELDOUT_VALUE = "camp.heldout_value"
HELDOUT_SE = "camp.heldout_se"
GAIN_VS_CHAMPION = "camp.gain_vs_champion"
GAIN_INTERVAL = "camp.gain_interval"
FLOOR_GAIN = "camp.floor_gain"


def heldout(metric: str) -> str:
    """The metric name of `metric` as finalize's held-out estimate: `val/macro_f1_heldout`."""
    return f"{metric}_heldout"
