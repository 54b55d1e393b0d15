"""The served model and the registry: a pyfunc that takes raw images (preprocessing included),
registered as `camp-classifier`, with the `champion` alias moved only on a real improvement.

Input: a pandas DataFrame with one column `image` holding, per row, the image's bytes base64-encoded
(the form `mlflow models serve` receives as JSON); raw bytes also work from Python. For HxWxC uint8
arrays call `model.unwrap_python_model().predict_images(list_of_arrays)`, for files on this machine
`model.unwrap_python_model().predict_files(paths)` (camp predict, the report).

What a client may send is vetted first (camp.serving_input): file paths are refused unless the operator
names allowed folders in $CAMP_SERVE_PATHS, and a request has a pixel budget.
Output: one row per input: `label`, `p_<label>` per class, and `error` (empty when the item was
read; otherwise the label is empty, the probabilities NaN, and `error` says what was wrong).
A bad item never fails the batch and never gets a label: unreadable, corrupt or oversized images
and arrays of the wrong dtype or shape each get an `error` naming the item and what was expected.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from camp import cascade, classical, ensemble, names, quantize, serving_input
from camp.images import decode_path
from camp.model import TTAS, mirror, predict_probabilities
from camp.preprocess import PreprocessConfig
from camp.run_config import first_validation_path, validation_paths

MODEL_NAME = "camp-classifier"
CHAMPION = "champion"
PACKAGE_DIR = Path(__file__).resolve().parent


class CampClassifier(mlflow.pyfunc.PythonModel):
    """Raw images in, labels and class probabilities out, with camp's own preprocessing."""

    def load_context(self, context):
        self.load_bundle(context.artifacts["bundle"])

    def load_bundle(self, bundle: str | Path, weights: str = "served"):
        """A trained run's bundle (`camp.json` + `model.keras` or the classical `model.pkl`), or an ensemble
        bundle (`ensemble.json` + `members/<k>/`, each a run's bundle). `weights="float"` serves the Keras
        weights even where registration kept TensorFlow Lite flatbuffers (camp.quantize): to compare the two."""
        bundle = Path(bundle)
        self.bundle = bundle
        if (bundle / "ensemble.json").is_file():
            spec = json.loads((bundle / "ensemble.json").read_text())
            members = [CampClassifier().load_bundle(bundle / "members" / name, weights) for name in spec["members"]]
            if any(member.labels != list(spec["labels"]) for member in members):
                raise ValueError(f"{bundle}: ensemble members disagree on the labels")
            tta = spec.get("tta", "none")  # bundles from before test-time augmentation have none
            if tta not in TTAS:
                raise ValueError(f"{bundle / 'ensemble.json'}: tta must be one of {TTAS}, got {tta!r}")
            gated = cascade.from_spec(spec.get("cascade"), len(members), str(bundle / "ensemble.json"))
            return self.assemble(members, [float(weight) for weight in spec["weights"]], tta, gated)

        meta = json.loads((bundle / "camp.json").read_text())
        self.members, self.weights, self.tta, self.cascade = None, None, "none", None
        self.labels = list(meta["labels"])
        self.preprocess = PreprocessConfig(**meta["preprocess"])
        if (bundle / "model.keras").is_file():
            self.model = quantize.load(bundle, weights)  # the flatbuffer where registration kept one
            if self.model is None:
                import keras

                self.model = keras.models.load_model(bundle / "model.keras", compile=False)
        else:
            self.model = classical.load(bundle)
        return self

    def assemble(self, members: list, weights: list[float], tta: str, gated: cascade.Cascade | None = None):
        """This model as an ensemble of loaded single models `members` (each set to serve with `tta`), as a
        registered ensemble bundle loads: also how serving_cost times an ensemble before it is registered."""
        self.members, self.weights, self.tta, self.cascade = list(members), list(weights), tta, gated
        self.labels, self.preprocess = list(members[0].labels), members[0].preprocess
        memo = classical.FeatureMemo()  # members with one HOG shape share their features per request
        for member in self.members:
            member.tta = tta
            if isinstance(member.model, classical.HogLinear):
                member.model.memo = memo
        return self

    def keras_models(self) -> dict:
        """{bundle folder: Keras model} of the CNNs this serves with float weights."""
        members = self.members or [self]
        return {member.bundle: member.model for member in members if hasattr(member.model, "save_weights")}

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """The pyfunc entry (Python and `make serve`): an unreadable item's probabilities are None, which the
        scoring server writes as JSON `null` (NaN would be written as a bare `NaN`, which is not JSON).
        The DataFrame hint is one MLflow infers no schema from (camp logs its signature itself); without a
        hint MLflow warns at every import that one should be added."""
        frame = self.predict_images(serving_input.to_values(model_input))
        columns = [f"p_{label}" for label in self.labels]
        frame[columns] = frame[columns].astype(object).where(frame[columns].notna(), None)
        return frame

    def predict_files(self, paths) -> pd.DataFrame:
        """Files on this machine (a trusted caller: camp predict, the report); errors name each file."""
        return self._frame(*self._probabilities([str(path) for path in paths], []))

    def probabilities(self, values) -> tuple[np.ndarray, list]:
        """(len(values), classes) probabilities, NaN rows for unreadable items, and (index, error) pairs;
        values as a client sends them (bytes, base64, arrays; paths only under $CAMP_SERVE_PATHS)."""
        sources, errors = serving_input.vet(values)
        return self._probabilities(sources, errors)

    def predict_images(self, values) -> pd.DataFrame:
        return self._frame(*self.probabilities(values))

    def _probabilities(self, sources, errors) -> tuple[np.ndarray, list]:
        """Probabilities for decodable sources (`serving_input.REFUSED`: already an error); an ensemble
        averages its members', decoding each image once per decode size and preprocessing it once per distinct
        preprocessing (members at 48 and 64 px share one decode). With a cascade (camp.cascade) the members
        score only the images its gate did not answer."""
        decoded_by_reduction: dict = {}
        inputs_by_preprocess: dict = {}

        def inputs(preprocess):
            if preprocess not in inputs_by_preprocess:
                reduction = preprocess.decode_reduction
                if reduction not in decoded_by_reduction:
                    decoded_by_reduction[reduction] = serving_input.decoded(sources, reduction)
                inputs_by_preprocess[preprocess] = serving_input.model_inputs(decoded_by_reduction[reduction], preprocess)
            return inputs_by_preprocess[preprocess]

        members, weights = (self.members, self.weights) if self.members else ([self], [1.0])
        gate, pending, merged = None, None, dict(errors)
        if self.cascade is not None:  # the gate answers the images it is sure of; the rest go to every member
            x, rows, _ = inputs(members[self.cascade.gate].preprocess)  # its errors are merged with its member's
            gate = np.full((len(sources), len(self.labels)), np.nan)
            if rows:
                gate[rows] = predict_probabilities(members[self.cascade.gate].model, x, "none")
            pending = ~cascade.exits(gate, self.cascade.threshold)
        outputs = []
        for position, member in enumerate(members):
            x, rows, member_errors = inputs(member.preprocess)
            merged.update(member_errors)
            probabilities = np.full((len(sources), len(self.labels)), np.nan)
            if pending is not None:  # only the rows the gate left
                keep = [i for i, row in enumerate(rows) if pending[row]]
                x, rows = (x[keep] if keep else None), [rows[i] for i in keep]
            if rows and position == getattr(self.cascade, "gate", None):  # its plain pass is the gate's
                probabilities[rows] = gate[rows] if member.tta == "none" else (
                    gate[rows] + predict_probabilities(member.model, mirror(x), "none")) / 2
            elif rows:
                probabilities[rows] = predict_probabilities(member.model, x, member.tta)
            outputs.append(probabilities)
        combined = ensemble.average(outputs, weights)
        if gate is not None:
            combined = cascade.combine(gate, combined, self.cascade.threshold)
        return combined, sorted(merged.items())

    def _frame(self, probabilities: np.ndarray, errors: list) -> pd.DataFrame:
        count = len(probabilities)
        predicted = np.nan_to_num(probabilities, nan=-1).argmax(axis=1)
        frame = pd.DataFrame(index=range(count))
        frame["label"] = [self.labels[predicted[i]] if not np.isnan(probabilities[i, 0]) else "" for i in range(count)]
        for column, label in enumerate(self.labels):
            frame[f"p_{label}"] = probabilities[:, column]
        frame["error"] = ""
        for index, message in errors:
            frame.loc[index, "error"] = message
        return frame


SPEED_BATCH = 256  # images per call when registration measures the served model's speed
SPEED_REPEATS = 3


def client_batches(paths, size: int = SPEED_BATCH, count: int = SPEED_REPEATS + 1) -> list[list[str]]:
    """`count` batches of `size` images as a client sends them to `make serve` (base64 text of the encoded
    file: decoding it is part of serving), the files at `paths` repeated as needed, each batch starting one
    file later: with more files than batches no two are the same request, so nothing a served model
    remembers of a request (classical.FeatureMemo) makes a repeat look faster."""
    values = []
    for path in paths:
        try:
            values.append(base64.b64encode(Path(path).read_bytes()).decode("ascii"))
        except OSError:  # a file gone since training: measured without it
            continue
    if not values:
        raise ValueError(f"measuring serving speed needs at least one readable image; none of {len(paths)} was")
    cycle = values * ((size + count) // len(values) + 1)
    return [cycle[start:start + size] for start in range(count)]


def seconds_per_image(call, batches: list) -> float:
    """`call(batch)` on each batch, the first a warm-up: the median time of the others, per image."""
    call(batches[0])
    times = []
    for batch in batches[1:]:
        started = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) / len(batches[0])


def served_images_per_second(served: CampClassifier, paths) -> float:
    """Batch throughput of a loaded served model on the images at `paths`, sent as a client sends them."""
    return 1.0 / seconds_per_image(served.probabilities, client_batches(paths))


def preprocessing_seconds_per_image(preprocess: PreprocessConfig, batches: list) -> float:
    """What vetting, decoding and preprocessing cost per image before any model runs (an ensemble's
    members with the same preprocessing share it)."""
    def run(values):
        sources, _ = serving_input.vet(values)
        serving_input.model_inputs(serving_input.decoded(sources, preprocess.decode_reduction), preprocess)
    return seconds_per_image(run, batches)


def resolve_version(model_uri: str):
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the registered MLflow ModelVersion; anything else,
    or a version the store does not have, is a ValueError naming the URI and the store."""
    reference = model_uri[len("models:/"):] if model_uri.startswith("models:/") else ""
    if "@" not in reference and "/" not in reference:
        raise ValueError(f"{model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    client = mlflow.MlflowClient()
    try:
        if "@" in reference:
            return client.get_model_version_by_alias(*reference.split("@", 1))
        return client.get_model_version(*reference.rsplit("/", 1))
    except mlflow.exceptions.MlflowException as error:
        raise ValueError(f"{model_uri}: no such registered model version in {mlflow.get_tracking_uri()} "
                         f"(run `make sweep` first): {error.message.splitlines()[0]}") from None


def example_input(image_path: str | Path) -> pd.DataFrame:
    """A small, portable input example: one image as base64 JPEG (not a machine-specific path)."""
    import cv2

    image = decode_path(image_path, 4)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return pd.DataFrame({"image": [base64.b64encode(encoded.tobytes()).decode("ascii")]})


def log_pyfunc(bundle_dir: str | Path, x_example: str | Path, validation: list[str] | None = None):
    """Log the bundle as a pyfunc model in the active run; returns MLflow's ModelInfo. Given the paths of
    its `validation` images, its CNNs are served as TensorFlow Lite flatbuffers (int8 weights, else float32
    ones) where that keeps their labels (camp.quantize), and the run is tagged with
    what was decided."""
    from mlflow.models import infer_signature

    if validation is not None:
        decision = quantize.quantize_bundle(Path(bundle_dir), validation, CampClassifier().load_bundle)
        mlflow.set_tags({names.SERVING: decision["serving"], **({names.SERVING_AGREEMENT: decision["agreement"]}
                                                                 if "agreement" in decision else {})})
    served = CampClassifier().load_bundle(bundle_dir)
    if validation:  # how fast it serves on the machine that registers it, for the registry and the report
        decision["images_per_second"] = round(served_images_per_second(served, validation), 1)
        mlflow.set_tag(names.SERVING_SPEED, f"{decision['images_per_second']:.1f}")
    if validation is not None:
        print(f"serving: {json.dumps(decision)}")
    example = example_input(x_example)
    output = served.predict_images(list(example["image"]))
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
        example = first_validation_path(meta)
        with mlflow.start_run(run_id=run_id):
            return log_pyfunc(bundle, example, validation_paths(meta))
