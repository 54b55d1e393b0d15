"""The served CNNs with 8-bit weights: TensorFlow Lite dynamic-range quantization of a trained Keras model,
kept only where it predicts like the float model on the run's validation images.

Why: on 2 CPU cores a 64 px CNN's float forward pass runs ~380 images/s, so an ensemble of two of them
cannot serve 300 images/s; with int8 weights (activations quantized per batch, on XNNPACK) the same
network runs ~1,000-1,300 images/s (bench/serving_parts.py). When a model is registered,
`quantize_bundle` writes `model.tflite` beside each CNN's `model.keras` in the served bundle, scores the
validation images both ways, and deletes the quantized files again when the served labels differ on more
than `1 - MIN_AGREEMENT` of them. `CampClassifier` then serves `model.tflite` where it exists and the
interpreter can be loaded, and the Keras model otherwise (or always, with $CAMP_SERVE_FLOAT=1).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

QUANTIZED_FILE = "model.tflite"
FLOAT_ENV = "CAMP_SERVE_FLOAT"  # 1: serve the Keras models even where a bundle has quantized ones
MIN_AGREEMENT = 0.99  # of validation images whose served label the quantized model must keep
CHUNK = 16  # images per interpreter call: as fast per image as 256 here, with far smaller buffers


def _interpreter_class():
    """TensorFlow Lite's interpreter, or None where this TensorFlow has none (it is deprecated in favour of
    the separate LiteRT package, so a later TensorFlow may drop it: then camp serves the float models)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tensorflow as tf

            return tf.lite.Interpreter
    except (ImportError, AttributeError):
        return None


WEIGHTS = ("served", "float")  # what a bundle is loaded with: int8 where registration kept it, or the Keras weights


def use_quantized(weights: str = "served") -> bool:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    return (weights == "served" and os.environ.get(FLOAT_ENV, "").strip() not in ("1", "true", "yes")
            and _interpreter_class() is not None)


def convert(model) -> bytes:
    """A Keras CNN (uint8 images in, probabilities out) as a TensorFlow Lite flatbuffer with int8 weights."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8)
    serve = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    # no trackable object: with the model passed, the converter may keep its variables as resource reads
    # that the interpreter never initialises (NaN out, or "READ_VARIABLE failed"); without it they are frozen
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic-range quantization
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


class QuantizedModel:
    """A `model.tflite` with the two calls `camp.model.predict_probabilities` makes of a Keras model.
    One interpreter runs full chunks and another the remainder, so a stream of single images or of
    256-image batches never reallocates; a lock serialises calls (an interpreter is not thread-safe)."""

    def __init__(self, content: bytes, threads: int | None = None):
        interpreter = _interpreter_class()
        if interpreter is None:
            raise ValueError("this TensorFlow has no tf.lite.Interpreter: serve the Keras model instead")
        threads = threads or os.cpu_count() or 1
        self._content = content  # the interpreters read the flatbuffer in place: it must outlive them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._interpreters = [interpreter(model_content=content, num_threads=threads) for _ in range(2)]
        # (input, output) tensor details: fixed per interpreter, so read once, not per chunk
        self._details = [(each.get_input_details()[0], each.get_output_details()[0]) for each in self._interpreters]
        self._sizes = [0, 0]
        self._lock = threading.Lock()

    def _run(self, which: int, batch: np.ndarray) -> np.ndarray:
        interpreter = self._interpreters[which]
        source, target = self._details[which]
        if self._sizes[which] != len(batch):
            interpreter.resize_tensor_input(source["index"], list(batch.shape))
            interpreter.allocate_tensors()
            self._sizes[which] = len(batch)
        interpreter.set_tensor(source["index"], np.ascontiguousarray(batch, dtype=np.uint8))
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.uint8:
            raise ValueError(f"the quantized model takes uint8 images, got {x.dtype}")
        full = len(x) - len(x) % CHUNK
        with self._lock:
            parts = [self._run(0, x[start:start + CHUNK]) for start in range(0, full, CHUNK)]
            if full < len(x):
                parts.append(self._run(1, x[full:]))
        if not parts:
            return np.zeros((0, self._details[0][1]["shape"][-1]), dtype=np.float32)
        return np.concatenate(parts)

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        return self.predict_on_batch(x)


def load(bundle: Path, weights: str = "served") -> QuantizedModel | None:
    """The bundle's quantized CNN when it has one and camp is to serve it (`weights="served"`, and no
    $CAMP_SERVE_FLOAT); else None (serve `model.keras`)."""
    path = Path(bundle) / QUANTIZED_FILE
    if not use_quantized(weights) or not path.is_file():
        return None
    return QuantizedModel(path.read_bytes())


def cnn_bundles(bundle: Path) -> list[Path]:
    """The folders of a served bundle (a run's, or an ensemble's members) that hold a Keras model."""
    bundle = Path(bundle)
    folders = [bundle] + sorted(p for p in (bundle / "members").glob("*") if p.is_dir())
    return [folder for folder in folders if (folder / "model.keras").is_file()]


def quantize_bundle(bundle: Path, validation_paths: list[str], load_served) -> dict:
    """Write `model.tflite` beside each CNN in `bundle` and keep them only if the served model's labels on
    `validation_paths` stay the same for at least MIN_AGREEMENT of the readable images.
    `load_served(bundle, weights=...)` loads the bundle as served (`CampClassifier().load_bundle`), and what
    it returns has `keras_models()`: {folder: the Keras model loaded from it}, so each is loaded once.
    Returns what was decided, for tags."""
    folders = cnn_bundles(bundle)
    if not folders:
        return {"serving": "float", "reason": "no CNN to quantize"}
    if _interpreter_class() is None:
        return {"serving": "float", "reason": "this TensorFlow has no tf.lite.Interpreter"}
    float_served = load_served(bundle, weights="float")
    float_probabilities = float_served.predict_files(validation_paths)
    loaded = {Path(folder).resolve(): model for folder, model in float_served.keras_models().items()}
    for folder in folders:
        model = loaded.get(folder.resolve())
        if model is None:
            import keras

            model = keras.models.load_model(folder / "model.keras", compile=False)
        (folder / QUANTIZED_FILE).write_bytes(convert(model))
    del float_served, loaded
    quantized_probabilities = load_served(bundle).predict_files(validation_paths)
    readable = (float_probabilities["error"] == "").to_numpy()
    columns = [c for c in float_probabilities.columns if c.startswith("p_")]
    before = float_probabilities.loc[readable, columns].to_numpy(dtype=np.float64)
    after = quantized_probabilities.loc[readable, columns].to_numpy(dtype=np.float64)
    agreement = float((before.argmax(axis=1) == after.argmax(axis=1)).mean()) if len(before) else 0.0
    decision = {"agreement": round(agreement, 4), "max_probability_change": round(float(np.abs(before - after).max()), 4)
                if len(before) else None, "images": int(readable.sum()), "members": len(folders)}
    if len(before) and agreement >= MIN_AGREEMENT:
        return {"serving": "int8", **decision}
    for folder in folders:
        (folder / QUANTIZED_FILE).unlink()
    return {"serving": "float", "reason": f"labels agreed on {agreement:.3f} < {MIN_AGREEMENT} of validation", **decision}
