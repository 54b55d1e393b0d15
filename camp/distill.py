"""Finalize's distillation (`study.finalize.distill`): one CNN trained to answer like the ensemble finalize
chose, so that the registered model costs one forward pass an image instead of one per member and view.

Why: on 2 CPU cores a 64 px CNN pass costs ~0.6-2.2 ms an image (int8, by the CPU), so a champion of two
CNNs with flip test-time augmentation serves ~90-180 images/s (BENCHMARKS.md, "Serving"); one CNN with no
augmentation serves ~340-720. Ensembles win on quality, and a student trained on their probabilities keeps
part of that gain (Hinton et al. 2015, "Distilling the knowledge in a neural network").

How: the student starts from the ensemble's best CNN member by its own validation score (weights and
architecture), and trains `epochs` more epochs on the training images, its schedule decaying to zero; it keeps
its best validation epoch, the start counting as epoch 0 (so it is never worse there than that member). Its
target per image mixes the teacher's probabilities (the ensemble as served: its members' weights and
augmentation) with the label, smoothed. The teacher scores the training images only, so validation stays
outside what the student learns from (the ensemble's member weights were chosen on it, as for any finalist);
the student is scored on validation, and its caller logs and registers it.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from camp import ensemble, metrics, names
from camp.caches import load_arrays
from camp.model import balanced_weights, mirror, predict_probabilities, schedule, training_seed
from camp.registry import CampClassifier
from camp.run_config import RunConfig, prepare_dataset, run_config_from_meta
from camp.runtime import configure_tensorflow
from camp.train import save_model_bundle

TEACHER_SHARE = 0.7  # of the target that is the teacher's probabilities; the rest is the smoothed label
LABEL_SMOOTHING = 0.05  # of the label's part, as the default study's trials train
PEAK_LEARNING_RATE = 3e-4  # the trials end at 0 from 1e-3: a restart at a third of it, decaying to 0 again
# One epoch of linear warm-up, as the trials train, instead of restarting a fresh Adam at the peak at once.
# Alone it did not stop the first epoch's fall on validation (seed 44: 0.779 at the start, 0.589 after one
# epoch, against 0.619 without it); with the batch-norm momentum below, every epoch scored higher than without
# either (BENCHMARKS.md, "Distillation, second round").
WARMUP_EPOCHS = 1
# Keras' batch-norm default (0.99) averages its inference statistics over ~100 steps, two of the student's
# epochs at 48 steps each: scored after an epoch, the student is judged partly with statistics of weights it
# has left. At 0.9 they follow within ~10 steps. Part of the fall only: a trial retrained at 0.9 still
# scored erratically in its early epochs (same section).
BATCH_NORM_MOMENTUM = 0.9
BATCH_SIZE = 64


def best_cnn_member(bundle: Path, member_values: list[float], maximize: bool) -> int:
    """The position of the member the student starts from, in the ensemble `bundle`: the CNN with the best
    validation value of its own (`member_values`, in member order)."""
    spec = json.loads((Path(bundle) / "ensemble.json").read_text())
    positions = [i for i, name in enumerate(spec["members"]) if (Path(bundle) / "members" / name / "model.keras").is_file()]
    if not positions:
        raise ValueError(f"{bundle}: distillation needs a CNN member to start from; the ensemble has none")
    return sorted(positions, key=lambda i: member_values[i], reverse=maximize)[0]


def student_schedule(epochs: int, steps_per_epoch: int):
    """The student's learning rate: linear warm-up over `WARMUP_EPOCHS` (none when it trains one epoch), then
    cosine from `PEAK_LEARNING_RATE` to zero at its last step."""
    warmup = min(WARMUP_EPOCHS, epochs - 1) * steps_per_epoch
    return schedule(PEAK_LEARNING_RATE, warmup, epochs * steps_per_epoch, "cosine")


def teacher_probabilities(teacher, config: RunConfig) -> dict:
    """The teacher's probabilities on the training images, beside the student's inputs (train and
    validation, at `config.preprocess`), labels and validation relpaths: each member scores its own
    preprocessing (the array cache its trial filled), with the teacher's augmentation, as served."""
    dataset, data_fp = prepare_dataset(config)
    used = [item for item in dataset.items if item.split in ("train", "validation")]
    key = f"{data_fp}-train+validation"  # the key a trial's training uses: a cache hit after the search
    arrays = {}  # per distinct preprocessing: members (and the student, one of them) often share one
    for preprocess in [member.preprocess for member in teacher.members] + [config.preprocess]:
        if preprocess not in arrays:
            arrays[preprocess] = load_arrays(used, key, preprocess, progress=False)
    rows = {preprocess: {split: [i for i, item in enumerate(each.items) if item.split == split]
                         for split in ("train", "validation")} for preprocess, each in arrays.items()}
    relpaths = {tuple(each.items[i].relpath for i in rows[preprocess]["train"]) for preprocess, each in arrays.items()}
    if len(relpaths) > 1:
        raise ValueError(f"{teacher.bundle}: the members read different training images (a file unreadable "
                         "at one preprocessing only); distillation needs the same images for every member")
    outputs = [predict_probabilities(member.model, arrays[member.preprocess].x[rows[member.preprocess]["train"]],
                                     teacher.tta) for member in teacher.members]
    own, train, validation = arrays[config.preprocess], rows[config.preprocess]["train"], rows[config.preprocess]["validation"]
    return {"x": own.x[train], "y": np.array([own.items[i].label for i in train]),
            "soft": ensemble.average(outputs, teacher.weights), "x_val": own.x[validation],
            "y_val": np.array([own.items[i].label for i in validation]),
            "val_relpaths": [own.items[i].relpath for i in validation]}


def distill(bundle: Path, start: int, epochs: int, out: Path, progress: bool = True) -> dict:
    """Train the student from member `start` of the ensemble `bundle` (the teacher, served as registered but
    with float weights) for `epochs` epochs, and save its bundle to `out`. Returns its validation labels,
    relpaths and probabilities (plain and mirrored), its value of the study's metric, and its cost."""
    import keras
    import tensorflow as tf

    teacher = CampClassifier().load_bundle(bundle, weights="float")
    meta = json.loads((Path(teacher.members[start].bundle) / "camp.json").read_text())
    config = run_config_from_meta(meta)
    started = time.perf_counter()
    data = teacher_probabilities(teacher, config)
    x, y, soft, x_val, y_val = data["x"], data["y"], data["soft"], data["x_val"], data["y_val"]
    n_classes = soft.shape[1]
    keras.utils.set_random_seed(training_seed(config.seed, config.model))
    tf.config.experimental.enable_op_determinism()
    student = keras.models.load_model(Path(teacher.members[start].bundle) / "model.keras", compile=False)
    for layer in student.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCH_NORM_MOMENTUM  # read when the training step is traced, at the first fit
    label = keras.utils.to_categorical(y, n_classes) * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / n_classes
    target = (1 - TEACHER_SHARE) * label + TEACHER_SHARE * soft
    steps = -(-len(x) // BATCH_SIZE)
    student.compile(optimizer=keras.optimizers.AdamW(student_schedule(epochs, steps), weight_decay=config.model.weight_decay),
                    loss=keras.losses.CategoricalCrossentropy())
    class_weight = ({i: float(w) for i, w in enumerate(balanced_weights(y, n_classes)) if w > 0}
                    if config.model.loss_weighting == "balanced" else None)
    # as every camp CNN keeps its best validation epoch: here the start member's own weights are epoch 0,
    # so a student that never beats them on validation is served as that member
    probabilities = predict_probabilities(student, x_val)
    best_value, best_epoch = ensemble.score(y_val, probabilities, config.metric), 0
    best_weights = student.get_weights()
    for epoch in range(1, epochs + 1):
        student.fit(x, target, batch_size=BATCH_SIZE, epochs=1, class_weight=class_weight, verbose=0, shuffle=True)
        scored = predict_probabilities(student, x_val)
        value = ensemble.score(y_val, scored, config.metric)
        if progress:
            print(f"distill: epoch {epoch}/{epochs}: student {config.metric} {value:.4f}", flush=True)
        if names.better(value, best_value, config.direction):
            best_value, best_epoch, best_weights, probabilities = value, epoch, student.get_weights(), scored
    student.set_weights(best_weights)  # `probabilities` are already the kept epoch's: no second pass
    teacher_train = metrics.classification_metrics(y, soft.argmax(axis=1), "train")["train/macro_f1"]
    save_model_bundle(student, config, meta["labels"], Path(out))
    return {"y_val": y_val, "val_relpaths": data["val_relpaths"], "probabilities": probabilities,
            "probabilities_flip": (probabilities + predict_probabilities(student, mirror(x_val))) / 2,
            "value": best_value,
            "teacher_train_macro_f1": round(float(teacher_train), 4), "train_images": len(x), "best_epoch": best_epoch,
            "seconds": round(time.perf_counter() - started, 1)}


def distill_in_child(bundle: Path, start: int, epochs: int, out: Path) -> dict:
    """`distill` in a fresh process with every core's thread: the sweep's own process runs TensorFlow with
    one thread per worker, and a training run there would also stay in its memory."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_child, str(bundle), start, epochs, str(out), os.cpu_count() or 1).result()


def _child(bundle: str, start: int, epochs: int, out: str, threads: int) -> dict:
    os.environ["CAMP_THREADS"] = str(threads)
    configure_tensorflow()  # TensorFlow's runtime starts here, after its thread count is set
    return distill(Path(bundle), start, epochs, Path(out))
