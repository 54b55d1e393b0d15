"""Distillation (`study.finalize.distill`) measured on a registered ensemble champion: the student camp would
train from it, side by side with the ensemble (its teacher) and the member it starts from, on validation and
test through the served path, with the student's test gain over each as a paired bootstrap interval, and each
model's batch throughput in one process (prints one JSON object). Needs an ensemble registered by
`make sweep`, or a student registered by it (sweeps/serve-fast.yaml): then its teacher ensemble is distilled
again with this checkout's code, and the registered student is scored beside the new one. Nothing is
registered or logged.

    .venv/bin/python bench/distill.py [--model models:/camp-classifier@champion] [--epochs 6] [--data data/clothing-small]

Test is reported, never chosen on: `--start` defaults to what finalize does (the best CNN member by its trial's
validation value).
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--data", default="data/clothing-small")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--start", type=int, default=None, help="member position to start from (default: finalize's)")
    args = parser.parse_args()

    import mlflow

    from camp import data, distill, metrics, names, quantize
    from camp.registry import CampClassifier, resolve_version, served_images_per_second

    version = resolve_version(args.model)
    run = registered = mlflow.get_run(version.run_id)
    if run.data.tags.get("camp.role") == "student":
        # the run's tag, or the version's where an older camp put it there only
        run = mlflow.get_run(run.data.tags.get(names.TEACHER) or version.tags[names.TEACHER])
    if run.data.tags.get("camp.role") != "ensemble":
        raise SystemExit(f"{args.model} is not an ensemble (camp.role {run.data.tags.get('camp.role')!r}): nothing to distil")
    dataset = data.load_dataset(args.data)
    labels = dataset.labels
    split = {name: dataset.split(name) for name in ("validation", "test")}
    with tempfile.TemporaryDirectory() as directory:
        bundle = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="bundle", dst_path=directory))
        spec = json.loads((bundle / "ensemble.json").read_text())
        values = [float(mlflow.get_run(member).data.metrics.get("val/macro_f1", float("nan"))) for member in spec["runs"]]
        start = distill.best_cnn_member(bundle, values, True) if args.start is None else args.start
        student_dir = Path(directory) / "student"
        trained = distill.distill_in_child(bundle, start, args.epochs, student_dir)
        start_dir = Path(directory) / "start"
        shutil.copytree(bundle / "members" / spec["members"][start], start_dir)
        validation_paths = [str(item.path) for item in split["validation"]]
        # int8 weights where they keep the labels, as registration serves each of them (the run's bundle has none)
        quantized = {name: quantize.quantize_bundle(folder, validation_paths, CampClassifier().load_bundle)["serving"]
                     for name, folder in (("teacher", bundle), ("student", student_dir), ("start", start_dir))}
        models = {"teacher": CampClassifier().load_bundle(bundle), "student": CampClassifier().load_bundle(student_dir),
                  "start": CampClassifier().load_bundle(start_dir)}
        if registered is not run:  # the student the sweep registered, as served (its int8 weights included)
            models["registered_student"] = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}").unwrap_python_model()
        probabilities, out = {}, {"bench": "distill", "model": args.model, "version": version.version,
                                  "members": spec["members"], "tta": spec.get("tta"), "start": spec["members"][start],
                                  "epochs": args.epochs, "serving": quantized, "distill_seconds": trained["seconds"],
                                  "best_epoch": trained["best_epoch"],
                                  "teacher_train_macro_f1": trained["teacher_train_macro_f1"], "macro_f1": {},
                                  "images_per_second": {}, "student_minus": {}}
        for name, model in models.items():
            for split_name, items in split.items():
                frame = model.predict_files([str(item.path) for item in items])
                probabilities[name, split_name] = frame[[f"p_{label}" for label in labels]].to_numpy(np.float64)
                y = np.array([item.label for item in items])
                out["macro_f1"].setdefault(name, {})[split_name] = round(
                    metrics.value("val/macro_f1", y, probabilities[name, split_name].argmax(axis=1), None), 4)
        y_test = np.array([item.label for item in split["test"]])
        for other in [name for name in models if name != "student"]:
            gain, low, high = metrics.paired_bootstrap("val/macro_f1", y_test, probabilities["student", "test"],
                                                       probabilities[other, "test"])
            out["student_minus"][other] = {"test": round(gain, 4), "interval": [round(low, 4), round(high, 4)]}
        test_paths = [str(item.path) for item in split["test"]]
        for name in ("teacher", "student", "teacher", "student"):  # alternated: a slow spell hits both
            rate = served_images_per_second(models[name], test_paths)
            out["images_per_second"].setdefault(name, []).append(round(rate, 1))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
