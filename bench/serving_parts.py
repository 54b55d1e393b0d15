"""Where a served batch's time goes, stage by stage, on this machine (prints one JSON object): decoding real
photos, preprocessing them at 64 and 48 px, HOG features (camp's batched ones and scikit-image's per-image
`hog`, on the same inputs), and the forward pass of camp's default CNN (the warm-start architecture, untrained
weights: speed does not depend on them) at 64 and 48 px, as `predict_on_batch`, under XLA
(`tf.function(jit_compile=True)`), and as the TensorFlow Lite flatbuffers camp serves (`camp.quantize`: float32
and int8 weights). Every figure is images per second, the median of `--repeats` calls.

    .venv/bin/python bench/serving_parts.py [--data data/clothing-small] [--batch 256]

It needs no registered model: run it to see what bounds an ensemble's batch throughput (a flip-TTA member
costs two forward passes, and an ensemble's members run one after another).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rate(call, count: int, repeats: int) -> float:
    """Images per second of `call` over `count` images: the median of `repeats` timed calls after a warm-up."""
    call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return round(count / statistics.median(seconds), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/clothing-small")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from camp import classical, data, quantize
    from camp.model import ModelConfig, build_model
    from camp.preprocess import PreprocessConfig
    from camp.runtime import configure_tensorflow
    from camp.serving_input import decoded as _decoded
    from camp.serving_input import model_inputs as _model_inputs

    configure_tensorflow()
    import tensorflow as tf

    paths = [item.path for item in data.load_dataset(args.data).split("test")][:args.batch]
    result: dict = {"bench": "serving_parts", "batch": len(paths), "cpus": os.cpu_count(), "images_per_second": {}}
    rates = result["images_per_second"]
    configs = {size: PreprocessConfig(crop_method="none", crop_top=0.0, crop_bottom=0.0, crop_left=0.0,
                                      crop_right=0.0, scale=0.5, mode="gray", size=size) for size in (64, 48)}
    reduction = configs[64].decode_reduction
    rates["decode"] = rate(lambda: _decoded(paths, reduction), len(paths), args.repeats)
    decoded = _decoded(paths, reduction)
    inputs = {}
    for size, config in configs.items():
        rates[f"preprocess {size}px"] = rate(lambda config=config: _model_inputs(decoded, config), len(paths), args.repeats)
        inputs[size] = _model_inputs(decoded, config)[0]
    x = inputs[64]
    for cell, orientations in ((8, 9), (6, 12)):
        knobs = (cell, orientations)
        rates[f"hog 64px cell {cell} x{orientations}, batched"] = rate(
            lambda knobs=knobs: classical.hog_features(x, *knobs), len(x), args.repeats)
        rates[f"hog 64px cell {cell} x{orientations}, skimage per image"] = rate(
            lambda knobs=knobs: classical._hog_features_per_image(x, *knobs), len(x), args.repeats)
    for size, batch in inputs.items():
        model = build_model(batch.shape[1:], 5, ModelConfig(block="plain", conv_blocks=4, filters=32, dense_units=128,
                                                            dropout=0.3))
        compiled = tf.function(lambda images, model=model: model(images, training=False), jit_compile=True)
        rates[f"cnn {size}px predict_on_batch"] = rate(lambda model=model, batch=batch: model.predict_on_batch(batch),
                                                       len(batch), args.repeats)
        rates[f"cnn {size}px xla"] = rate(lambda compiled=compiled, batch=batch: compiled(tf.constant(batch)).numpy(),
                                          len(batch), args.repeats)
        for precision in quantize.PRECISIONS:
            served = quantize.LiteModel(quantize.convert(model, precision))
            rates[f"cnn {size}px {precision} flatbuffer (camp.quantize)"] = rate(
                lambda served=served, batch=batch: served.predict_on_batch(batch), len(batch), args.repeats)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
