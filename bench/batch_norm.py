"""Why a CNN trial scores near chance on validation in its first epochs (prints one JSON object): one of a
study's warm-start CNNs (by default sweeps/default.yaml's first) is trained epoch by epoch as `camp.train`
trains it, once per batch-norm momentum (`model.batch_norm_momentum`), and after every epoch its validation
macro-F1 is read twice: with the moving statistics it was trained with (what a trial logs, the pruner
ranks and the best epoch is chosen on), and with the statistics recomputed for its current weights from
the training images, un-augmented (a cumulative average over batches of 256). The model is restored after
each reading. Training itself reads batch statistics only, so the weights follow the same path under every
momentum (`weights_checksum` says whether they did).

With `--model URI` (a registered version, e.g. models:/camp-classifier@champion, from the store in the
working directory) nothing is trained: each CNN member of that model is read on validation, plain and
with flip test-time augmentation, with its own statistics and with them recomputed, i.e. at the end of
training, where the best epoch was chosen on the statistics as trained.

    .venv/bin/python bench/batch_norm.py [--study sweeps/default.yaml] [--warm-start 0] [--epochs 6]
                                         [--momenta 0.99,0.9] [--data PATH]
    .venv/bin/python bench/batch_norm.py --model models:/camp-classifier@champion [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")  # --model reads the store in the working directory
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def train_and_validation(config):
    """(x_train, y_train, x_val, y_val, labels) at `config.preprocess`, from the array cache a trial's training
    fills (the same key), so a bench after a sweep decodes nothing."""
    from camp.caches import load_arrays
    from camp.run_config import prepare_dataset

    dataset, fingerprint = prepare_dataset(config)
    used = [item for item in dataset.items if item.split in ("train", "validation")]
    arrays = load_arrays(used, f"{fingerprint}-train+validation", config.preprocess, progress=False)
    split = np.array([item.split for item in arrays.items])
    y = np.array([item.label for item in arrays.items])
    train, validation = split == "train", split == "validation"
    return arrays.x[train], y[train], arrays.x[validation], y[validation], dataset.labels


def recomputed_statistics(model, x: np.ndarray, batch: int = 256) -> None:
    """Set every batch-norm layer's moving statistics to their average over `x` in batches (augmentation
    layers skipped), as SWA's `update_bn` does; the layers' momenta are restored."""
    import keras
    import tensorflow as tf

    augmentation = (keras.layers.RandomFlip, keras.layers.RandomTranslation, keras.layers.RandomZoom)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for count, start in enumerate(range(0, len(x), batch)):
        for layer in norms:
            layer.momentum = count / (count + 1)  # the running mean of the batches' statistics
        hidden = tf.convert_to_tensor(x[start:start + batch])
        for layer in model.layers[1:]:
            if not isinstance(layer, augmentation):
                hidden = layer(hidden, training=isinstance(layer, keras.layers.BatchNormalization))
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="sweeps/default.yaml")
    parser.add_argument("--warm-start", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--momenta", default="0.99,0.9")
    parser.add_argument("--data", default=None)
    parser.add_argument("--model", default=None, help="read a registered model's CNN members instead of training")
    args = parser.parse_args()
    if args.model:
        print(json.dumps(registered(args.model, args.data), indent=2))
        return 0
    import dataclasses

    import optuna

    from camp import metrics
    from camp.config import load_study_file
    from camp.model import balanced_weights, build_model, learning_rate, make_loss, make_optimizer, training_seed
    from camp.objective import config_for, plan_for
    from camp.runtime import configure_tensorflow
    from camp.warm_start import warm_start_trials

    configure_tensorflow()
    import keras

    plan = plan_for(load_study_file(args.study), 1, None, None, args.data)
    params, label = warm_start_trials(plan, None)[args.warm_start]
    config = config_for(optuna.trial.FixedTrial(params), plan)
    if config.model.family != "cnn" or not config.model.batch_norm:
        raise SystemExit(f"{args.study}: {label} is not a CNN with batch norm")
    x_train, y_train, x_val, y_val, labels = train_and_validation(config)
    n_classes = len(labels)
    weights = balanced_weights(y_train, n_classes)
    class_weight = ({i: float(w) for i, w in enumerate(weights) if w > 0}
                    if config.model.loss_weighting == "balanced" else None)

    def macro_f1(model) -> float:
        predicted = model.predict(x_val, batch_size=256, verbose=0).argmax(axis=1)
        return round(metrics.classification_metrics(y_val, predicted)["val/macro_f1"], 4)

    result = {"bench": "batch_norm", "study": args.study, "warm_start": label, "cpus": os.cpu_count(),
              "train_images": len(x_train), "validation_images": len(x_val), "max_epochs": config.model.max_epochs,
              "lr_schedule": config.model.lr_schedule, "runs": []}
    for momentum in [float(value) for value in args.momenta.split(",")]:
        model_config = dataclasses.replace(config.model, batch_norm_momentum=momentum)
        keras.backend.clear_session()
        keras.utils.set_random_seed(training_seed(config.seed, model_config))
        model = build_model(config.preprocess.input_shape, n_classes, model_config)
        steps = -(-len(x_train) // model_config.batch_size)
        model.compile(optimizer=make_optimizer(model_config, steps, learning_rate(model_config, steps)),
                      loss=make_loss(model_config, weights))
        run = {"batch_norm_momentum": momentum, "as_trained": [], "statistics_recomputed": [], "seconds": []}
        for epoch in range(args.epochs):
            started = time.time()
            model.fit(x_train, keras.utils.to_categorical(y_train, n_classes), batch_size=model_config.batch_size,
                      initial_epoch=epoch, epochs=epoch + 1, class_weight=class_weight, verbose=0, shuffle=True)
            run["seconds"].append(round(time.time() - started, 1))
            run["as_trained"].append(macro_f1(model))
            kept = model.get_weights()
            recomputed_statistics(model, x_train)
            run["statistics_recomputed"].append(macro_f1(model))
            model.set_weights(kept)
            print(f"momentum {momentum}, epoch {epoch + 1}: {run['as_trained'][-1]:.3f} as trained, "
                  f"{run['statistics_recomputed'][-1]:.3f} recomputed", file=sys.stderr, flush=True)
        run["weights_checksum"] = round(float(sum(np.abs(w).sum() for w in model.trainable_weights)), 3)
        result["runs"].append(run)
    print(json.dumps(result, indent=2))
    return 0


def registered(model_uri: str, data_path: str | None) -> dict:
    """Validation macro-F1 of each CNN member of `model_uri`, with its statistics as trained and recomputed."""
    import dataclasses
    import glob
    import tempfile

    import mlflow

    from camp import metrics
    from camp.model import mirror
    from camp.run_config import run_config_from_meta
    from camp.runtime import configure_tensorflow

    configure_tensorflow()
    import keras

    result = {"bench": "batch_norm", "model": model_uri, "members": []}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=directory))
        for path in sorted(glob.glob(str(root / "**" / "model.keras"), recursive=True)):
            meta = json.loads((Path(path).parent / "camp.json").read_text())
            config = run_config_from_meta(meta)
            if data_path:
                config = dataclasses.replace(config, data_path=data_path)
            x_train, _, x_val, y_val, _ = train_and_validation(config)
            model = keras.models.load_model(path, compile=False)

            def read(model=model, x_val=x_val, y_val=y_val) -> dict:
                plain = model.predict(x_val, batch_size=256, verbose=0)
                flip = (plain + model.predict(mirror(x_val), batch_size=256, verbose=0)) / 2
                return {name: round(metrics.classification_metrics(y_val, p.argmax(axis=1))["val/macro_f1"], 4)
                        for name, p in (("plain", plain), ("flip", flip))}
            as_trained = read()
            recomputed_statistics(model, x_train)
            result["members"].append({"member": Path(path).parent.name, "as_trained": as_trained,
                                      "statistics_recomputed": read()})
    return result


if __name__ == "__main__":
    raise SystemExit(main())
