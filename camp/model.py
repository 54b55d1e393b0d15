"""The model knobs: a frozen `ModelConfig`, the CNN (a Keras 3 Functional model, plain or residual
blocks), its learning-rate schedule and losses (plain, balanced, focal). `family: hog_linear` selects the
classical model instead (`camp.classical`), whose knobs (`hog_*`) live here too.

The CNN takes uint8 images (the preprocessing output) and rescales them itself, so training and
the served model feed the same arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FAMILIES = ("cnn", "hog_linear")
BLOCKS = ("plain", "residual")
SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSS_WEIGHTINGS = ("none", "balanced", "focal")
TTAS = ("none", "flip")  # test-time augmentation: flip also scores the mirror image and averages the two
FOCAL_ALPHAS = ("none", "balanced")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture, optimiser, budget, augmentation and class-imbalance handling."""

    family: str = "cnn"
    conv_blocks: int = 3
    block: str = "plain"  # residual: each block adds its input (1x1 projection) to its two convolutions
    filters: int = 32
    kernel_size: int = 3
    batch_norm: bool = True
    # the moving statistics a CNN is scored and served with average over ~1/(1 - momentum) steps; at Keras'
    # 0.99 that is ~2 epochs of 45 steps, so while the weights still move fast the statistics lag them and a
    # trial's first epochs score near chance on validation (bench/batch_norm.py). Training does not read them.
    batch_norm_momentum: float = 0.99
    dropout: float = 0.25
    dense_units: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    # over max_epochs: cosine / linear decay to zero make the last epochs settle instead of jumping
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 20
    patience: int = 5
    min_epochs: int = 5  # no early stop before this: unweighted losses predict only `tops` at first
    augmentation: bool = True
    loss_weighting: str = "balanced"
    focal_gamma: float = 2.0
    focal_alpha: str = "balanced"
    label_smoothing: float = 0.0
    # family hog_linear: HOG features of the preprocessed image + multinomial logistic regression
    hog_cell: int = 8  # pixels per HOG cell (blocks are 2x2 cells)
    hog_orientations: int = 9
    hog_c: float = 1.0  # inverse L2 strength of the logistic regression
    # which independent training of the same recipe: it offsets the seed of weight init, batch order and
    # augmentation (never the data split), so replicas differ only by chance and an ensemble of them
    # averages that chance out
    replica: int = 0

    def __post_init__(self):
        if isinstance(self.replica, bool) or not isinstance(self.replica, int) or not 0 <= self.replica <= 999:
            raise ValueError(f"replica must be an integer in [0, 999], got {self.replica!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.warmup_epochs < self.max_epochs:
            raise ValueError(f"warmup_epochs must be in [0, max_epochs), got {self.warmup_epochs}")
        if not 2 <= self.hog_cell <= 64:
            raise ValueError(f"hog_cell must be in [2, 64] pixels, got {self.hog_cell}")
        if not 2 <= self.hog_orientations <= 36:
            raise ValueError(f"hog_orientations must be in [2, 36], got {self.hog_orientations}")
        if not 0.0 < self.hog_c <= 1e4:
            raise ValueError(f"hog_c must be in (0, 1e4], got {self.hog_c}")
        if not 1 <= self.conv_blocks <= 6:
            raise ValueError(f"conv_blocks must be in [1, 6], got {self.conv_blocks}")
        if not 4 <= self.filters <= 512:
            raise ValueError(f"filters must be in [4, 512], got {self.filters}")
        if self.kernel_size not in (3, 5, 7):
            raise ValueError(f"kernel_size must be 3, 5 or 7, got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.dense_units <= 4096:
            raise ValueError(f"dense_units must be in [0, 4096] (0 = no dense layer), got {self.dense_units}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.batch_norm_momentum < 1.0:
            raise ValueError(f"batch_norm_momentum must be in [0, 1), got {self.batch_norm_momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 1 <= self.batch_size <= 4096:
            raise ValueError(f"batch_size must be in [1, 4096], got {self.batch_size}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.min_epochs < 1:
            raise ValueError(f"min_epochs must be >= 1, got {self.min_epochs}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if not 0.0 <= self.focal_gamma <= 10.0:
            raise ValueError(f"focal_gamma must be in [0, 10], got {self.focal_gamma}")
        if self.focal_alpha not in FOCAL_ALPHAS:
            raise ValueError(f"focal_alpha must be one of {FOCAL_ALPHAS}, got {self.focal_alpha!r}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


def training_seed(seed: int, model_config: ModelConfig) -> int:
    """The seed one training run uses: the run's seed, offset per replica (within numpy's seed range)."""
    return (seed + 1_000_003 * model_config.replica) % 2 ** 32


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn's 'balanced' weights, n / (k * count), with 0 for absent classes."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


def build_model(input_shape: tuple[int, int, int], n_classes: int, config: ModelConfig):
    """Conv blocks (conv-BN-ReLU x2, max-pool, filters doubling) -> global pooling -> dense -> softmax."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image", dtype="uint8")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    if config.augmentation:
        x = layers.RandomFlip("horizontal")(x)
        x = layers.RandomTranslation(0.08, 0.08, fill_mode="nearest")(x)
        x = layers.RandomZoom(0.1, fill_mode="nearest")(x)
    filters = config.filters
    for _ in range(config.conv_blocks):
        shortcut = x
        for index in range(2):
            x = layers.Conv2D(filters, config.kernel_size, padding="same", use_bias=not config.batch_norm)(x)
            if config.batch_norm:
                x = layers.BatchNormalization(momentum=config.batch_norm_momentum)(x)
            if config.block == "residual" and index == 1:
                if shortcut.shape[-1] != filters:
                    shortcut = layers.Conv2D(filters, 1, padding="same", use_bias=False)(shortcut)
                x = layers.Add()([x, shortcut])
            x = layers.Activation("relu")(x)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = layers.MaxPooling2D()(x)
        filters = min(filters * 2, 512)
    x = layers.GlobalAveragePooling2D()(x)
    if config.dropout:
        x = layers.Dropout(config.dropout)(x)
    if config.dense_units:
        x = layers.Dense(config.dense_units, activation="relu")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="camp_cnn")


def learning_rate(config: ModelConfig, steps_per_epoch: int):
    """The learning rate or schedule over `max_epochs` x `steps_per_epoch` optimiser steps: constant, or
    linear warm-up from ~0 over `warmup_epochs` then constant, cosine or linear decay to zero. A schedule's
    end can be brought forward while it runs (`Schedule.end_at`): a trial shortened to fit the study's
    timeout still decays to zero."""

    total = max(1, config.max_epochs * steps_per_epoch)
    warmup = config.warmup_epochs * steps_per_epoch
    if config.lr_schedule == "constant" and not warmup:
        return config.learning_rate
    return schedule(config.learning_rate, warmup, total, config.lr_schedule)


def schedule(peak: float, warmup: int, total: int, shape: str):
    """Linear warm-up to `peak` over `warmup` steps, then constant, cosine or linear decay to zero at the
    step held in a variable (the compiled train step reads it at every step, so it can change mid-fit)."""
    import math

    import keras
    from keras import ops

    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self):
            self.total = keras.Variable(float(total), trainable=False, dtype="float32", name="schedule_total")

        def __call__(self, step):
            step = ops.cast(step, "float32")
            if shape == "cosine":  # Keras CosineDecay's warm-up, which the measured default recipe trained with
                rising = peak * 1e-2 + (peak - peak * 1e-2) * step / float(max(1, warmup))
            else:
                rising = peak * (step + 1.0) / float(max(1, warmup))
            progress = ops.clip((step - warmup) / ops.maximum(1.0, self.total - warmup), 0.0, 1.0)
            if shape == "cosine":
                falling = peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
            elif shape == "linear":
                falling = peak * (1.0 - progress)
            else:
                falling = peak * ops.ones_like(progress)
            return ops.where(step < warmup, rising, falling)

        def end_at(self, steps: int) -> None:
            """Reach zero at `steps` instead (never before the warm-up ends)."""
            self.total.assign(float(max(steps, warmup + 1)))

        def get_config(self):
            return {"peak": peak, "warmup": warmup, "total": float(ops.convert_to_numpy(self.total)), "shape": shape}

    return Schedule()


def make_optimizer(config: ModelConfig, steps_per_epoch: int = 1, rate=None):
    """The configured optimiser over `rate` (by default `learning_rate(config, steps_per_epoch)`)."""
    import keras

    rate = learning_rate(config, steps_per_epoch) if rate is None else rate
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=True)
    return keras.optimizers.RMSprop(rate)


def make_loss(config: ModelConfig, class_weights: np.ndarray):
    """Cross-entropy on one-hot targets, or focal loss with per-class alpha (normalised weights)."""
    import keras
    from keras import ops

    n_classes = len(class_weights)
    if config.loss_weighting != "focal":
        return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    if config.focal_alpha == "balanced":
        alpha = class_weights / class_weights.sum()
    else:
        alpha = np.full(n_classes, 1.0 / n_classes)
    alpha = ops.convert_to_tensor(alpha.astype("float32"))
    gamma, smoothing = config.focal_gamma, config.label_smoothing

    def focal_loss(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        if smoothing:
            y_true = y_true * (1.0 - smoothing) + smoothing / n_classes
        probabilities = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        cross_entropy = -y_true * ops.log(probabilities)
        modulating = ops.power(1.0 - probabilities, gamma)
        # alpha rescaled so the balanced focal loss has the magnitude of the plain one
        return ops.sum(alpha * n_classes * modulating * cross_entropy, axis=-1)

    return focal_loss


def predict_probabilities(model, x: np.ndarray, tta: str = "none") -> np.ndarray:
    """(N, classes) probabilities of a trained CNN or `camp.classical.HogLinear` on model inputs `x`
    (N, H, W, C); `tta="flip"` averages them with the horizontally mirrored images' (training augments
    with the same flip, so the mirror is an image the model knows). A batch of up to 256 goes through
    `predict_on_batch`, which skips the per-call dataset set-up that dominates one-image latency."""
    if tta not in TTAS:
        raise ValueError(f"tta must be one of {TTAS}, got {tta!r}")

    def run(batch):
        if len(batch) <= 256 and hasattr(model, "predict_on_batch"):
            return np.asarray(model.predict_on_batch(batch), dtype=np.float64)
        return np.asarray(model.predict(batch, batch_size=256, verbose=0), dtype=np.float64)

    if tta == "flip" and 2 * len(x) <= 256:  # both views in one call: one dispatch instead of two
        both = run(np.concatenate([x, mirror(x)]))
        return (both[:len(x)] + both[len(x):]) / 2
    if tta == "flip":
        return (run(x) + run(mirror(x))) / 2
    return run(x)


def mirror(x: np.ndarray) -> np.ndarray:
    """Model inputs (N, H, W, C) flipped left to right, contiguous (what TensorFlow is fed)."""
    return np.ascontiguousarray(x[:, :, ::-1])
