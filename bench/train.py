"""Training throughput per epoch for camp's default model at three input sizes (prints JSON).

For each input shape: images/s of `model.fit` on NumPy arrays (as camp trains), of the same model
fed from an in-memory `tf.data` pipeline (cache + prefetch), and the compute floor: the model's
FLOPs per image (forward + backward ~ 3x forward) x images / this machine's measured matmul GFLOP/s.
Variants tried: batch size 32/64/128, augmentation off (its cost; camp's default augments inside
the model), XLA `jit_compile` (without augmentation: Keras cannot compile the random layers), and
`--threads N` (TensorFlow intra/inter-op threads, one run each). Inputs are NHWC (channels-last),
Keras's default; channels-first is not tried (TensorFlow's CPU Conv2D has long supported only NHWC).
The winner is kept in ModelConfig defaults only when it wins here.

    .venv/bin/python bench/train.py [--images 1024] [--epochs 2] [--shapes 32x32x1,64x64x3] [--threads 1]
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

SHAPES = [(32, 32, 1), (64, 64, 1), (64, 64, 3)]


def conv_flops(model) -> float:
    """Forward multiply-adds x 2 of Conv2D and Dense layers, per image."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_h, kernel_w, in_channels, _ = layer.kernel.shape
            total += 2.0 * height * width * out_channels * kernel_h * kernel_w * in_channels
        elif isinstance(layer, keras.layers.Dense):
            in_features, out_features = layer.kernel.shape
            total += 2.0 * in_features * out_features
    return total


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.linalg.matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2.0 * size ** 3 * repeats / (time.perf_counter() - started) / 1e9


def fit_rate(shape, images: int, epochs: int, batch_size: int, source: str, jit: bool = False,
             augmentation: bool = True) -> tuple[float, float]:
    import keras
    import tensorflow as tf

    from camp.model import ModelConfig, build_model, make_loss, make_optimizer

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    config = ModelConfig(batch_size=batch_size, augmentation=augmentation)
    model = build_model(shape, 5, config)
    model.compile(optimizer=make_optimizer(config), loss=make_loss(config, np.ones(5)), jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(images, *shape), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, 5, size=images), 5)
    if source == "tf.data":
        data = tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(images, seed=0).batch(batch_size).prefetch(2)
        model.fit(data, epochs=1, verbose=0)  # warm-up: tracing, cache fill
        started = time.perf_counter()
        model.fit(data, epochs=epochs, verbose=0)
    else:
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        started = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    return images * epochs / (time.perf_counter() - started), conv_flops(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads (0: TensorFlow's default, as camp runs it)")
    parser.add_argument("--shapes", default=",".join("x".join(map(str, shape)) for shape in SHAPES))
    args = parser.parse_args()
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    shapes = [tuple(int(side) for side in shape.split("x")) for shape in args.shapes.split(",")]
    gflops = matmul_gflops()
    rows = []
    for shape in shapes:
        numpy_rate, flops = fit_rate(shape, args.images, args.epochs, 64, "numpy")
        data_rate, _ = fit_rate(shape, args.images, args.epochs, 64, "tf.data")
        floor = gflops * 1e9 / (3.0 * flops)
        variants = {f"batch{b}": round(fit_rate(shape, args.images, args.epochs, b, "numpy")[0], 1) for b in (32, 128)}
        variants["batch64_no_augmentation"] = round(
            fit_rate(shape, args.images, args.epochs, 64, "numpy", augmentation=False)[0], 1)
        # Keras refuses XLA for the random augmentation layers (it warns and runs without), so XLA is
        # measured on the model without them: compare it with batch64_no_augmentation
        variants["batch64_no_augmentation_jit"] = round(
            fit_rate(shape, args.images, args.epochs, 64, "numpy", jit=True, augmentation=False)[0], 1)
        rows.append({"shape": "x".join(map(str, shape)), "images_per_second": {
            "camp_numpy_fit_batch64": round(numpy_rate, 1), "in_memory_tf_data_batch64": round(data_rate, 1),
            "compute_floor": round(floor, 1), **variants},
            "mflops_per_image_forward": round(flops / 1e6, 2),
            "pipeline_share_of_in_memory": round(numpy_rate / data_rate, 2),
            "fraction_of_compute_floor": round(numpy_rate / floor, 3)})
    print(json.dumps({"bench": "train", "images": args.images, "epochs": args.epochs, "cores": os.cpu_count(),
                      "threads": args.threads or "default",
                      "matmul_gflops": round(gflops, 1), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
