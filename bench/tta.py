"""Flip test-time augmentation on a registered model: validation and test macro-F1 of the model and of
each of its members, without and with the mirror average, and the paired bootstrap of the difference
(prints JSON). Validation is what finalize chooses on; test is reported, never used to choose.

    .venv/bin/python bench/tta.py [--model models:/camp-classifier@champion] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")

METRIC = "val/macro_f1"


def _scores(model, dataset, resamples: int) -> dict:
    from camp import metrics
    from camp.evaluation import split_predictions

    out = {}
    for split in ("validation", "test"):
        scored = {}
        for tta in ("none", "flip"):
            for member in model.members or [model]:
                member.tta = tta
            scored[tta] = split_predictions(model, dataset, split)
        y = np.array([dataset.labels.index(label) if isinstance(label, str) else label
                      for label in scored["none"]["y_true"]])
        difference, low, high = metrics.paired_bootstrap(METRIC, y, scored["flip"]["probabilities"],
                                                         scored["none"]["probabilities"], resamples)
        out[split] = {"none": round(metrics.value(METRIC, y, probabilities=scored["none"]["probabilities"]), 4),
                      "flip": round(metrics.value(METRIC, y, probabilities=scored["flip"]["probabilities"]), 4),
                      "flip_minus_none": round(difference, 4), "ci95": [round(low, 4), round(high, 4)]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/camp-classifier@champion")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    import mlflow

    from camp.registry import CampClassifier
    from camp.run_config import prepare_dataset, run_config_from_meta

    with tempfile.TemporaryDirectory() as directory:
        model_path = mlflow.artifacts.download_artifacts(artifact_uri=args.model, dst_path=directory)
        bundle = Path(model_path) / "artifacts" / "bundle"
        model = CampClassifier().load_bundle(bundle)
        meta = json.loads((bundle / "camp.json").read_text())
        dataset, _ = prepare_dataset(run_config_from_meta(meta))
        result = {"model": args.model, "members": [], "champion": _scores(model, dataset, args.bootstrap)}
        spec = meta.get("ensemble", {})
        for position, member in enumerate(model.members or []):
            result["members"].append({"trial": spec.get("trials", [None] * 99)[position],
                                      "weight": round(model.weights[position], 3),
                                      "family": "cnn" if hasattr(member.model, "predict_on_batch") else "hog_linear",
                                      **_scores(member, dataset, args.bootstrap)})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
