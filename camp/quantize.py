"""The served CNNs as TensorFlow Lite flatbuffers: a trained Keras model converted with int8 weights
(dynamic-range quantization), or with float32 weights where the int8 ones change too many labels, kept only
where it predicts like the Keras model on the run's validation images.

Why: Keras' `predict_on_batch` is the slowest way to run a camp CNN on a CPU. Served with int8 weights (on
XNNPACK, activations quantized per batch) a 64 px CNN ran 3.5x faster on an AVX-512 machine; on an AVX2 one,
int8 and float32 flatbuffers served 1.5-1.7x and 1.4-1.6x Keras' images/s (bench/serving_parts.py,
bench/serving_precision.py, BENCHMARKS.md). int8 weights move probabilities by up to ~0.03, and on one
trained CNN they changed 1.3% of the validation labels; a float32 flatbuffer keeps them (probabilities
within 1e-6). When a model is registered, `quantize_bundle` writes `model.tflite` beside each CNN's
`model.keras` in the served bundle, int8 first, float32 where int8's served labels agree with Keras' on less
than `MIN_AGREEMENT` of the validation images, and deletes it again where neither does. `CampClassifier` then serves `model.tflite` where it exists and the interpreter can be
loaded, and the Keras model otherwise (or always, with $CAMP_SERVE_FLOAT=1).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

LITE_FILE = "model.tflite"
FLOAT_ENV = "CAMP_SERVE_FLOAT"  # 1: serve the Keras models even where a bundle has flatbuffers
MIN_AGREEMENT = 0.99  # of validation images whose served label the flatbuffers must keep
CHUNK = 16  # images per interpreter call: as fast per image as 256 here, with far smaller buffers
PRECISIONS = ("int8", "float32")  # in the order registration tries them (int8 served faster on both CPUs measured)
# the camp.serving tag: "float" is the Keras models (the tag's value before flatbuffers had two precisions)
SERVING = {"int8": "int8", "float32": "tflite-float32", None: "float"}


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


WEIGHTS = ("served", "float")  # what a bundle is loaded with: its flatbuffers where registration kept them, or Keras


def use_quantized(weights: str = "served") -> bool:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    return (weights == "served" and os.environ.get(FLOAT_ENV, "").strip() not in ("1", "true", "yes")
            and _interpreter_class() is not None)


def convert(model, precision: str = "int8") -> bytes:
    """A Keras CNN (uint8 images in, probabilities out) as a TensorFlow Lite flatbuffer with `precision`
    weights: int8 (dynamic-range quantization: activations are quantized per batch) or float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.uint8)
    serve = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    # no trackable object: with the model passed, the converter may keep its variables as resource reads
    # that the interpreter never initialises (NaN out, or "READ_VARIABLE failed"); without it they are frozen
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    if precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic-range quantization
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


class LiteModel:
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

    @property
    def precision(self) -> str:
        """int8 where the flatbuffer holds 8-bit weights, else float32."""
        tensors = self._interpreters[0].get_tensor_details()
        return "int8" if any(np.dtype(each["dtype"]) == np.int8 for each in tensors) else "float32"

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.uint8:
            raise ValueError(f"the served flatbuffer takes uint8 images, got {x.dtype}")
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


def load(bundle: Path, weights: str = "served") -> LiteModel | None:
    """The bundle's flatbuffer CNN when it has one and camp is to serve it (`weights="served"`, and no
    $CAMP_SERVE_FLOAT); else None (serve `model.keras`)."""
    path = Path(bundle) / LITE_FILE
    if not use_quantized(weights) or not path.is_file():
        return None
    return LiteModel(path.read_bytes())


def cnn_bundles(bundle: Path) -> list[Path]:
    """The folders of a served bundle (a run's, or an ensemble's members) that hold a Keras model."""
    bundle = Path(bundle)
    folders = [bundle] + sorted(p for p in (bundle / "members").glob("*") if p.is_dir())
    return [folder for folder in folders if (folder / "model.keras").is_file()]


def quantize_bundle(bundle: Path, validation_paths: list[str], load_served) -> dict:
    """Write `model.tflite` beside each CNN in `bundle`: int8 weights, kept only if the served model's labels
    on `validation_paths` stay the same for at least MIN_AGREEMENT of the readable images; else float32
    weights, checked alike; else none (the Keras models are served).
    `load_served(bundle, weights=...)` loads the bundle as served (`CampClassifier().load_bundle`), and what
    it returns has `keras_models()`: {folder: the Keras model loaded from it}, so each is loaded once.
    Returns what was decided, for tags."""
    folders = cnn_bundles(bundle)
    if not folders:
        return {"serving": SERVING[None], "reason": "no CNN to quantize"}
    if _interpreter_class() is None:
        return {"serving": SERVING[None], "reason": "this TensorFlow has no tf.lite.Interpreter"}
    float_served = load_served(bundle, weights="float")
    float_probabilities = float_served.predict_files(validation_paths)
    loaded = {Path(folder).resolve(): model for folder, model in float_served.keras_models().items()}
    models = {}
    for folder in folders:
        models[folder] = loaded.get(folder.resolve())
        if models[folder] is None:
            import keras

            models[folder] = keras.models.load_model(folder / "model.keras", compile=False)
    del float_served, loaded
    readable = (float_probabilities["error"] == "").to_numpy()
    columns = [c for c in float_probabilities.columns if c.startswith("p_")]
    before = float_probabilities.loc[readable, columns].to_numpy(dtype=np.float64)
    tried = {}
    for precision in PRECISIONS:  # converted only when the one before it changed too many labels
        for folder, model in models.items():
            (folder / LITE_FILE).write_bytes(convert(model, precision))
        after = load_served(bundle).predict_files(validation_paths).loc[readable, columns].to_numpy(dtype=np.float64)
        agreement = float((before.argmax(axis=1) == after.argmax(axis=1)).mean()) if len(before) else 0.0
        tried[precision] = agreement
        decision = {"agreement": round(agreement, 4), "max_probability_change": round(float(np.abs(before - after).max()), 4)
                    if len(before) else None, "images": int(readable.sum()), "members": len(folders)}
        if len(before) and agreement >= MIN_AGREEMENT:
            return {"serving": SERVING[precision], **decision}
    for folder in folders:
        (folder / LITE_FILE).unlink()
    said = ", ".join(f"{precision} on {agreement:.3f}" for precision, agreement in tried.items())
    return {"serving": SERVING[None], "reason": f"labels agreed ({said}) < {MIN_AGREEMENT} of validation", **decision}
