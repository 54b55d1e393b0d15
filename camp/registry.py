"""The served model and the registry: a pyfunc that takes raw images (preprocessing included),
registered as `camp-classifier`, with the `champion` alias moved only on a real improvement.

Input: a pandas DataFrame with one column `image` holding, per row, a file path or the image's
bytes base64-encoded (the form `mlflow models serve` receives as JSON); raw bytes also work from
Python. For HxWxC uint8 arrays call `model.unwrap_python_model().predict_images(list_of_arrays)`.
Output: one row per input: `label`, `p_<label>` per class, and `error` (empty when the item was
read; otherwise the label is empty, the probabilities NaN, and `error` says what was wrong).
A bad item never fails the batch and never gets a label: unreadable, corrupt or oversized images
and arrays of the wrong dtype or shape each get an `error` naming the item and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from camp import ensemble

MODEL_NAME = "camp-classifier"
CHAMPION = "champion"
PACKAGE_DIR = Path(__file__).resolve().parent


def _to_values(model_input) -> list:
    if isinstance(model_input, pd.DataFrame):
        column = "image" if "image" in model_input.columns else model_input.columns[0]
        return list(model_input[column])
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "biufc" and model_input.ndim >= 2:
        # (N, H, W, C) is a batch, (H, W, C) or (H, W) one image, whatever the dtype: each is then
        # checked on its own, so a float or oddly shaped array gets one error row naming the expected shape
        return list(model_input) if model_input.ndim >= 4 else [model_input]
    if isinstance(model_input, (list, tuple, pd.Series, np.ndarray)):
        return list(model_input)
    return [model_input]


def _as_image_source(value):
    """A path that exists stays a path; otherwise a string is read as base64-encoded image bytes."""
    if isinstance(value, str):
        if len(value) < 4096 and os.path.exists(value):
            return value
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value  # reported as a missing file by the decoder
    return value


class CampClassifier(mlflow.pyfunc.PythonModel):
    """Raw images in, labels and class probabilities out, with camp's own preprocessing."""

    def load_context(self, context):
        self.load_bundle(context.artifacts["bundle"])

    def load_bundle(self, bundle: str | Path):
        """A trained run's bundle (`camp.json` + `model.keras` or the classical `model.pkl`), or an ensemble
        bundle (`ensemble.json` + `members/<k>/`, each a run's bundle)."""
        bundle = Path(bundle)
        if (bundle / "ensemble.json").is_file():
            spec = json.loads((bundle / "ensemble.json").read_text())
            self.members = [CampClassifier().load_bundle(bundle / "members" / name) for name in spec["members"]]
            self.weights = [float(weight) for weight in spec["weights"]]
            self.labels = list(spec["labels"])
            if any(member.labels != self.labels for member in self.members):
                raise ValueError(f"{bundle}: ensemble members disagree on the labels")
            self.preprocess = self.members[0].preprocess
            return self
        from camp.preprocess import PreprocessConfig

        meta = json.loads((bundle / "camp.json").read_text())
        self.members, self.weights = None, None
        self.labels = list(meta["labels"])
        self.preprocess = PreprocessConfig(**meta["preprocess"])
        if (bundle / "model.keras").is_file():
            import keras

            self.model = keras.models.load_model(bundle / "model.keras", compile=False)
        else:
            from camp import classical

            self.model = classical.load(bundle)
        return self

    def predict(self, context, model_input, params=None):
        return self.predict_images(_to_values(model_input))

    def probabilities(self, values) -> tuple[np.ndarray, list]:
        """(len(values), classes) probabilities, NaN rows for unreadable items, and (index, error) pairs.
        An ensemble averages its members' probabilities with its weights."""
        if self.members:
            outputs = [member.probabilities(values) for member in self.members]
            errors = dict(error for _, member_errors in outputs for error in member_errors)
            return ensemble.average([p for p, _ in outputs], self.weights), sorted(errors.items())
        from camp.images import UnreadableImage, decode_any
        from camp.preprocess import preprocess_image

        inputs, rows, errors = [], [], []
        for index, value in enumerate(values):
            try:
                decoded = decode_any(_as_image_source(value), self.preprocess.decode_reduction, where=f"item {index}")
                inputs.append(preprocess_image(decoded, self.preprocess))
                rows.append(index)
            except UnreadableImage as error:
                errors.append((index, str(error)))
        probabilities = np.full((len(values), len(self.labels)), np.nan)
        if inputs:
            probabilities[rows] = self.model.predict(np.stack(inputs), batch_size=256, verbose=0)
        return probabilities, errors

    def predict_images(self, values) -> pd.DataFrame:
        probabilities, errors = self.probabilities(values)
        predicted = np.nan_to_num(probabilities, nan=-1).argmax(axis=1)
        frame = pd.DataFrame(index=range(len(values)))
        frame["label"] = [self.labels[predicted[i]] if not np.isnan(probabilities[i, 0]) else "" for i in range(len(values))]
        for column, label in enumerate(self.labels):
            frame[f"p_{label}"] = probabilities[:, column]
        frame["error"] = ""
        for index, message in errors:
            frame.loc[index, "error"] = message
        return frame


def example_input(image_path: str | Path) -> pd.DataFrame:
    """A small, portable input example: one image as base64 JPEG (not a machine-specific path)."""
    import cv2

    from camp.images import decode_path

    image = decode_path(image_path, 4)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return pd.DataFrame({"image": [base64.b64encode(encoded.tobytes()).decode("ascii")]})


def log_pyfunc(bundle_dir: str | Path, x_example: str | Path):
    """Log the bundle as a pyfunc model in the active run; returns MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    example = example_input(x_example)
    output = CampClassifier().load_bundle(bundle_dir).predict_images(list(example["image"]))
    return mlflow.pyfunc.log_model(
        name="model", python_model=CampClassifier(), artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(PACKAGE_DIR)], signature=infer_signature(example, output), input_example=example,
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    packages = ["mlflow", "tensorflow", "keras", "opencv-python-headless", "numpy", "pandas", "pyyaml",
                "scikit-learn", "scikit-image", "tqdm"]
    return [f"{name}=={version(name)}" for name in packages]


def log_pyfunc_for_run(run_id: str):
    """Log the pyfunc into a finished run from its `bundle/` artifacts (the sweep's best trial)."""
    with tempfile.TemporaryDirectory() as directory:
        bundle = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=directory)
        meta = json.loads((Path(bundle) / "camp.json").read_text())
        example = _first_validation_path(meta)
        with mlflow.start_run(run_id=run_id):
            return log_pyfunc(bundle, example)


def _first_validation_path(meta: dict) -> str:
    """The first readable validation image of the run's dataset, for the model's input example."""
    from camp.images import UnreadableImage, decode_path
    from camp.train import prepare_dataset

    dataset, _ = prepare_dataset(_run_config_from_meta(meta))
    for item in dataset.split("validation"):
        try:
            decode_path(item.path, 4)
            return item.path
        except UnreadableImage:
            continue
    raise ValueError(f"{dataset.root}: no readable validation image to use as the model's input example")


def _run_config_from_meta(meta: dict):
    from camp.config import DataConfig
    from camp.model import ModelConfig
    from camp.preprocess import PreprocessConfig
    from camp.train import RunConfig

    raw = dict(meta["config"])
    return RunConfig(data=DataConfig(**raw["data"]), preprocess=PreprocessConfig(**raw["preprocess"]),
                     model=ModelConfig(**raw["model"]), seed=raw["seed"], metric=raw["metric"],
                     direction=raw["direction"], data_path=raw.get("data_path"))


def evaluate_on_validation(model_uri: str, config, metric: str) -> float:
    """The registered model's `metric` on `config`'s validation images, through pyfunc from raw files."""
    from camp import metrics
    from camp.train import prepare_dataset

    dataset, _ = prepare_dataset(config)
    items = dataset.split("validation")
    model = mlflow.pyfunc.load_model(model_uri)
    output = model.predict(pd.DataFrame({"image": [item.path for item in items]}))
    readable = output["error"] == ""
    labels = list(dataset.labels)
    predicted = np.array([labels.index(label) for label in output["label"][readable]])
    truth = np.array([item.label for item, ok in zip(items, readable) if ok])
    values = metrics.classification_metrics(truth, predicted)
    if metric not in values:
        raise ValueError(f"cannot recompute {metric} from predictions; use val/macro_f1 or val/accuracy")
    return values[metric]


def register_and_promote(model_uri: str, run_id: str, value: float, config, data_fingerprint: str,
                         log=print):
    """Register a model version; move `champion` to it only if it beats the current champion on the
    same validation data. Returns (version, promoted: bool)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    version = mlflow.register_model(model_uri, MODEL_NAME, tags={
        "camp.metric": config.metric, "camp.value": f"{value:.6f}", "camp.data_fingerprint": data_fingerprint,
        "camp.run_id": run_id})
    try:
        champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    if champion is None:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
        log(f"registered {MODEL_NAME} v{version.version} ({config.metric} {value:.4f}) as @{CHAMPION} (first champion)")
        return version, True
    tags = champion.tags or {}
    if tags.get("camp.data_fingerprint") == data_fingerprint and tags.get("camp.metric") == config.metric:
        champion_value = float(tags["camp.value"])
    else:
        log(f"re-evaluating @{CHAMPION} v{champion.version} on this validation set ...")
        champion_value = evaluate_on_validation(f"models:/{MODEL_NAME}@{CHAMPION}", config, config.metric)
    value = round(value, 6)  # as stored in the tag: a version is not better than itself
    better = value > champion_value if config.direction == "maximize" else value < champion_value
    if better:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
        log(f"@{CHAMPION} moved to {MODEL_NAME} v{version.version}: {config.metric} {value:.4f} beats v{champion.version}'s {champion_value:.4f}")
    else:
        log(f"registered {MODEL_NAME} v{version.version} ({config.metric} {value:.4f}); @{CHAMPION} stays on "
            f"v{champion.version} ({champion_value:.4f})")
    return version, better
