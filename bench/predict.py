"""The served model through `mlflow.pyfunc`: load time in a fresh process, single-image latency
(p50/p95) and batch throughput (prints JSON); beside it, measured in the same process, the same model
without and with flip test-time augmentation, with its CNNs' Keras weights where it serves flatbuffers
(camp.quantize, $CAMP_SERVE_FLOAT), and an ensemble's heaviest member alone. Needs a registered model
(run `make sweep` first).

    .venv/bin/python bench/predict.py [--model models:/camp-classifier@champion] [--data data/clothing-small]

A registered pyfunc carries the camp code it was logged with (`code_paths`), and MLflow serves that
copy. `--code checkout` instead loads the version's bundle with this checkout's `CampClassifier` (no
fresh-process load, no pyfunc schema check): run it from two checkouts to compare serving code on one
model, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")

LOAD_SCRIPT = """
import time, sys
started = time.perf_counter()
import mlflow
imported = time.perf_counter()
mlflow.pyfunc.load_model(sys.argv[1])
print(imported - started, time.perf_counter() - imported)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--data", default="data/clothing-small")
    parser.add_argument("--single", type=int, default=50, help="single-image calls for the latency percentiles")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--code", choices=("packaged", "checkout"), default="packaged",
                        help="serve with the code logged with the model (as MLflow does) or with this checkout's")
    args = parser.parse_args()
    import base64

    import mlflow
    import pandas as pd

    from camp import data, quantize
    from camp.registry import CampClassifier, client_batches

    if args.code == "checkout":
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model))
        local = CampClassifier().load_bundle(model_dir / "artifacts" / "bundle")
        model, fresh_process = None, None
    else:
        started = time.perf_counter()
        fresh = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, args.model], capture_output=True, text=True,
                               check=True)
        fresh_total = time.perf_counter() - started
        import_seconds, load_seconds = map(float, fresh.stdout.split()[-2:])
        fresh_process = {"import_mlflow_s": round(import_seconds, 2), "load_model_s": round(load_seconds, 2),
                         "total_with_interpreter_s": round(fresh_total, 2)}
        model = mlflow.pyfunc.load_model(args.model)

    # what a client sends: each image base64-encoded (the served model does not read client-named paths)
    files = [item.path for item in data.load_dataset(args.data).split("validation")]
    paths = [base64.b64encode(Path(path).read_bytes()).decode("ascii") for path in files]
    # distinct requests (each starts one image later), as registration times them: the same request twice
    # would let a model that remembers a request (classical.FeatureMemo) answer the repeat from memory
    batches = client_batches(files, args.batch)

    def measure(call) -> dict:
        call(pd.DataFrame({"image": paths[:2]}))  # warm-up
        latencies = []
        for path in paths[:args.single]:
            started = time.perf_counter()
            call(pd.DataFrame({"image": [path]}))
            latencies.append(time.perf_counter() - started)
        batch_times = []
        for batch in batches[1:]:  # one batch call is a second or two: the median of three
            started = time.perf_counter()
            call(pd.DataFrame({"image": batch}))
            batch_times.append(time.perf_counter() - started)
        batch_seconds = float(np.median(batch_times))
        return {"single_image_ms": {"p50": round(1000 * float(np.percentile(latencies, 50)), 1),
                                    "p95": round(1000 * float(np.percentile(latencies, 95)), 1), "n": len(latencies)},
                "batch": {"size": args.batch, "images_per_second": round(args.batch / batch_seconds, 1)}}

    inner = local if model is None else model.unwrap_python_model()
    members = inner.members or [inner]
    registered_tta = members[0].tta

    def with_tta(tta, call):
        def run(frame):
            for member in members:
                member.tta = tta
            try:
                return call(frame)
            finally:
                for member in members:
                    member.tta = registered_tta
        return run

    result = {"bench": "predict", "model": args.model, "code": args.code, "members": len(members),
              "tta": registered_tta, "fresh_process": fresh_process,
              # as served: through mlflow.pyfunc (schema checks included), with the registered augmentation;
              # with --code checkout, through this checkout's CampClassifier.predict
              **measure(model.predict if model is not None else lambda frame: inner.predict(None, frame))}
    # side by side, in this process: the same model without and with flip, and its heaviest member alone
    result["variants"] = {f"tta {tta}": measure(with_tta(tta, lambda frame: inner.predict(None, frame)))
                          for tta in ("none", "flip")}
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model))
    if any((folder / quantize.LITE_FILE).is_file() for folder in quantize.cnn_bundles(model_dir / "artifacts" / "bundle")):
        float_weights = CampClassifier().load_bundle(model_dir / "artifacts" / "bundle", weights="float")
        result["variants"]["float weights (the Keras models), registered tta"] = measure(
            lambda frame: float_weights.predict(None, frame))
        as_served, as_float = inner.predict(None, pd.DataFrame({"image": paths})), float_weights.predict(None, pd.DataFrame({"image": paths}))
        result["served_vs_keras_label_agreement_on_validation"] = round(float((as_served["label"] == as_float["label"]).mean()), 4)
    # camp before flatbuffers had two precisions served int8 ones only, as `QuantizedModel`
    lite = [getattr(m.model, "precision", "int8") for m in members
            if type(m.model).__name__ in ("LiteModel", "QuantizedModel")]
    result["serving"] = quantize.SERVING["int8" if "int8" in lite else "float32" if lite else None]
    if inner.members:
        heaviest = inner.members[int(np.argmax(inner.weights))]
        result["variants"]["heaviest member, tta none"] = measure(
            with_tta("none", lambda frame: heaviest.predict(None, frame)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
