"""One registered model served three ways, side by side in one process (prints JSON): its CNNs as the Keras
models, as TensorFlow Lite flatbuffers with float32 weights, and with int8 weights (`camp.quantize`); for
each, batch throughput on distinct 256-image client batches (base64, as `make serve` receives them) and
how often its validation labels agree with the Keras models'. Then what this checkout's registration
(`quantize.quantize_bundle`) would choose for it on this machine. Works on a copy of the version's bundle;
the registry is not changed. Needs a registered model (run `make sweep` first).

    .venv/bin/python bench/serving_precision.py [--model models:/camp-classifier@champion] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--data", default="data/clothing-small")
    parser.add_argument("--rounds", type=int, default=2, help="times each way is timed, in turn")
    args = parser.parse_args()
    import keras
    import mlflow

    from camp import data, quantize
    from camp.registry import CampClassifier, client_batches, seconds_per_image
    from camp.runtime import configure_tensorflow

    configure_tensorflow()
    os.environ.pop(quantize.FLOAT_ENV, None)
    dataset = data.load_dataset(args.data)
    validation = [item.path for item in dataset.split("validation")]
    batches = client_batches([item.path for item in dataset.split("test")])
    artifacts = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model)) / "artifacts"
    # versions registered before 4342ade kept a distilled student's bundle under another name
    registered = artifacts / "bundle" if (artifacts / "bundle").is_dir() else next(p for p in artifacts.iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as directory:
        copies = {precision: Path(directory) / precision for precision in quantize.PRECISIONS}
        for copy in copies.values():
            shutil.copytree(registered, copy)
        for folder in quantize.cnn_bundles(registered):
            model = keras.models.load_model(folder / "model.keras", compile=False)
            for precision, copy in copies.items():
                (copy / folder.relative_to(registered) / quantize.LITE_FILE).write_bytes(quantize.convert(model, precision))
        ways = {"keras": CampClassifier().load_bundle(registered, weights="float"),
                **{f"{precision} flatbuffers": CampClassifier().load_bundle(copies[precision])
                   for precision in quantize.PRECISIONS}}
        keras_labels = ways["keras"].predict_files(validation)["label"].to_numpy()
        result = {"bench": "serving_precision", "model": args.model, "cpus": os.cpu_count(),
                  "cnns": len(quantize.cnn_bundles(registered)), "batch": len(batches[0]), "ways": {}}
        rates = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, served in ways.items():
                rates[name].append(round(1.0 / seconds_per_image(served.probabilities, batches), 1))
        for name, served in ways.items():
            labels = served.predict_files(validation)["label"].to_numpy()
            result["ways"][name] = {"images_per_second": rates[name], "median": float(np.median(rates[name])),
                                    "validation_labels_agree_with_keras": round(float((labels == keras_labels).mean()), 4)}
        keras_rate = result["ways"]["keras"]["median"]
        for name in ways:
            result["ways"][name]["speedup_over_keras"] = round(result["ways"][name]["median"] / keras_rate, 2)
        chosen = Path(directory) / "chosen"
        shutil.copytree(registered, chosen)
        for folder in quantize.cnn_bundles(chosen):
            (folder / quantize.LITE_FILE).unlink(missing_ok=True)
        result["registration_would_choose"] = quantize.quantize_bundle(chosen, validation, CampClassifier().load_bundle)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
